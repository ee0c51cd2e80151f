"""Transaction: the state machine over a scripted fake Producer (no broker)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from confluent_kafka import KafkaError, KafkaException

from streams.exceptions import TransactionError
from streams.kafka import transaction
from streams.kafka.transaction import Transaction, TxnState

CONFIG = {"transactional.id": "orders.validate.0", "bootstrap.servers": "unused:9092"}
OFFSETS = {("orders.raw", 0): 11, ("orders.raw", 1): 5}
GROUP_METADATA = object()

Script = BaseException | Callable[[], None] | None


def kafka_error(
    code: int,
    reason: str = "reason",
    *,
    fatal: bool = False,
    retriable: bool = False,
    abortable: bool = False,
) -> KafkaException:
    return KafkaException(
        KafkaError(code, reason, fatal=fatal, retriable=retriable, txn_requires_abort=abortable)
    )


class FakeProducer:
    """Records every call; ``script[method]`` lists what successive calls do (raise or run)."""

    instances: ClassVar[list[FakeProducer]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.script: dict[str, list[Script]] = {}
        self.produced: list[tuple[str, bytes | None, bytes | None, Any]] = []
        self.delivery_callbacks: list[Any] = []
        FakeProducer.instances.append(self)

    def error_cb(self, error: KafkaError) -> None:
        self.config["error_cb"](error)

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        steps = self.script.get(name)
        if steps:
            step = steps.pop(0)
            if isinstance(step, BaseException):
                raise step
            if step is not None:
                step()

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def init_transactions(self, timeout: float) -> None:
        self._call("init_transactions", timeout)

    def begin_transaction(self) -> None:
        self._call("begin_transaction")

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        *,
        partition: int = -1,  # noqa: ARG002 - the real signature; the fake keeps no partitions
        headers: Any = None,
        on_delivery: Any = None,
        timestamp: int = 0,  # noqa: ARG002 - the real signature; the fake keeps no timestamps
    ) -> None:
        self._call("produce", topic)
        self.delivery_callbacks.append(on_delivery)
        self.produced.append((topic, value, key, headers))

    def poll(self, timeout: float) -> int:
        self._call("poll", timeout)
        return 0

    def flush(self, timeout: float) -> int:
        self._call("flush", timeout)
        return 0

    def send_offsets_to_transaction(
        self, partitions: list[Any], group_metadata: object, timeout: float
    ) -> None:
        self._call("send_offsets_to_transaction", partitions, group_metadata, timeout)

    def commit_transaction(self, timeout: float) -> None:
        self._call("commit_transaction", timeout)

    def abort_transaction(self, timeout: float) -> None:
        self._call("abort_transaction", timeout)


class FakeTime:
    """Stands in for the ``time`` module inside streams.kafka.transaction: sleep advances it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture(autouse=True)
def fake_producer(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    FakeProducer.instances = []
    monkeypatch.setattr(transaction, "Producer", FakeProducer)
    yield
    FakeProducer.instances = []


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(transaction, "time", fake)
    return fake


def state_of(txn: Transaction) -> TxnState:
    """The state, read afresh (mypy would keep a narrowing from an earlier assert)."""
    return txn.state


def new_transaction(deadline_s: float = 10.0) -> tuple[Transaction, FakeProducer]:
    txn = Transaction(CONFIG, deadline_s=deadline_s)
    return txn, FakeProducer.instances[-1]


# --- construction and the transition table ------------------------------------------------------


def test_a_new_transaction_inits_the_producer_and_is_idle(clock: FakeTime) -> None:
    txn, producer = new_transaction()

    assert txn.state is TxnState.IDLE
    assert txn.transactional_id == "orders.validate.0"
    assert producer.names() == ["init_transactions"]
    assert producer.config["transactional.id"] == "orders.validate.0"
    assert callable(producer.config["error_cb"])


def test_a_retriable_init_error_is_retried(clock: FakeTime) -> None:
    class Scripted(FakeProducer):
        def __init__(self, config: dict[str, Any]) -> None:
            super().__init__(config)
            self.script = {
                "init_transactions": [kafka_error(KafkaError._TIMED_OUT, retriable=True)]
            }

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transaction, "Producer", Scripted)
        txn = Transaction(CONFIG, deadline_s=10.0)

    assert txn.state is TxnState.IDLE
    assert FakeProducer.instances[-1].names() == ["init_transactions", "init_transactions"]


def test_a_fatal_init_error_is_raised(clock: FakeTime) -> None:
    class Scripted(FakeProducer):
        def __init__(self, config: dict[str, Any]) -> None:
            super().__init__(config)
            self.script = {"init_transactions": [kafka_error(KafkaError._FATAL, fatal=True)]}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transaction, "Producer", Scripted)
        with pytest.raises(TransactionError, match="init_transactions failed") as raised:
            Transaction(CONFIG, deadline_s=10.0)

    assert raised.value.fatal is True


def test_begin_opens_the_transaction(clock: FakeTime) -> None:
    txn, producer = new_transaction()
    clock.now = 2000.0

    txn.begin()
    clock.now = 2003.5

    assert txn.state is TxnState.OPEN
    assert txn.is_open is True
    assert txn.age_s == 3.5
    assert producer.names()[-1] == "begin_transaction"


def test_begin_twice_is_a_transaction_error(clock: FakeTime) -> None:
    txn, producer = new_transaction()
    txn.begin()

    with pytest.raises(
        TransactionError, match="begin is not allowed while the transaction is open"
    ):
        txn.begin()

    assert producer.names().count("begin_transaction") == 1
    assert txn.state is TxnState.OPEN


def test_produce_when_idle_is_a_transaction_error(clock: FakeTime) -> None:
    txn, producer = new_transaction()

    with pytest.raises(TransactionError, match=r"produce is not allowed.*idle") as raised:
        txn.produce("out", b"v", b"k", None)

    assert raised.value.fatal is True
    assert producer.names() == ["init_transactions"]
    assert producer.produced == []
    assert txn.records == 0


def test_commit_when_idle_is_a_transaction_error(clock: FakeTime) -> None:
    txn, producer = new_transaction()

    with pytest.raises(TransactionError, match=r"commit is not allowed.*idle"):
        txn.commit(OFFSETS, GROUP_METADATA)

    assert producer.names() == ["init_transactions"]


def test_abort_when_idle_does_nothing(clock: FakeTime) -> None:
    txn, producer = new_transaction()

    txn.abort()

    assert txn.state is TxnState.IDLE
    assert producer.names() == ["init_transactions"]


def test_a_failing_begin_breaks_the_transaction(clock: FakeTime) -> None:
    txn, producer = new_transaction()
    producer.script["begin_transaction"] = [kafka_error(KafkaError._FATAL, fatal=True)]

    with pytest.raises(TransactionError, match="begin_transaction failed"):
        txn.begin()

    assert txn.state is TxnState.BROKEN
    with pytest.raises(TransactionError, match="while the transaction is broken"):
        txn.produce("out", b"v", None, None)


# --- produce ------------------------------------------------------------------------------------


def test_produce_counts_records_and_passes_the_delivery_callback(clock: FakeTime) -> None:
    txn = Transaction(CONFIG, deadline_s=10.0, on_rejected=lambda _refusal: None)
    producer = FakeProducer.instances[-1]
    txn.begin()

    txn.produce("out", b"v1", b"k1", [("h", b"1")])
    txn.produce("out", None, None, None)

    assert txn.records == 2
    assert producer.produced == [("out", b"v1", b"k1", [("h", b"1")]), ("out", None, None, None)]
    callbacks = producer.delivery_callbacks
    assert len(callbacks) == 2
    assert all(getattr(cb, "func", None) == txn._on_delivery for cb in callbacks)


def test_without_on_rejected_no_delivery_callback_is_passed(clock: FakeTime) -> None:
    # a replay task: a failed delivery fails the commit (abortable), nothing else acts on it
    txn, producer = new_transaction()
    txn.begin()

    txn.produce("out", b"v1", b"k1", None)

    assert txn.records == 1
    assert producer.delivery_callbacks == [None]


def test_buffer_error_on_produce_polls_then_retries(clock: FakeTime) -> None:
    txn, producer = new_transaction()
    txn.begin()
    producer.script["produce"] = [BufferError("queue full"), BufferError("queue full"), None]

    txn.produce("out", b"v", b"k", None)

    assert producer.names()[-5:] == ["produce", "poll", "produce", "poll", "produce"]
    assert [args for name, args in producer.calls if name == "poll"] == [(0.05,), (0.05,)]
    assert producer.produced == [("out", b"v", b"k", None)]
    assert txn.records == 1


def test_an_abortable_produce_error_keeps_the_transaction_open(clock: FakeTime) -> None:
    txn, producer = new_transaction()
    txn.begin()
    producer.script["produce"] = [kafka_error(KafkaError._STATE, abortable=True)]

    with pytest.raises(TransactionError, match="produce to out failed") as raised:
        txn.produce("out", b"v", None, None)

    assert raised.value.requires_abort is True
    assert raised.value.fatal is False
    assert txn.state is TxnState.OPEN
    assert txn.records == 0


def test_a_fatal_produce_error_breaks_the_transaction(clock: FakeTime) -> None:
    txn, producer = new_transaction()
    txn.begin()
    producer.script["produce"] = [kafka_error(KafkaError._FATAL, fatal=True)]

    with pytest.raises(TransactionError) as raised:
        txn.produce("out", b"v", None, None)

    assert raised.value.fatal is True
    assert txn.state is TxnState.BROKEN


def test_a_delivery_failure_is_kept_once(clock: FakeTime) -> None:
    txn, _ = new_transaction()
    txn.begin()

    txn._on_delivery(None, None, object())
    txn._on_delivery(None, KafkaError(KafkaError._MSG_TIMED_OUT, "first"), object())
    txn._on_delivery(None, KafkaError(KafkaError._MSG_TIMED_OUT, "second"), object())

    assert txn.delivery_error is not None
    assert "first" in txn.delivery_error


# --- commit -------------------------------------------------------------------------------------


def test_commit_sends_offsets_then_commits(clock: FakeTime) -> None:
    txn, producer = new_transaction()
    txn.begin()

    txn.commit(OFFSETS, GROUP_METADATA)

    assert producer.names()[-2:] == ["send_offsets_to_transaction", "commit_transaction"]
    partitions, metadata, _ = next(
        args for name, args in producer.calls if name == "send_offsets_to_transaction"
    )
    assert metadata is GROUP_METADATA
    assert [(tp.topic, tp.partition, tp.offset) for tp in partitions] == [
        ("orders.raw", 0, 11),
        ("orders.raw", 1, 5),
    ]
    assert txn.state is TxnState.IDLE


def test_commit_without_offsets_only_commits(clock: FakeTime) -> None:
    txn, producer = new_transaction()
    txn.begin()

    txn.commit({}, GROUP_METADATA)

    assert "send_offsets_to_transaction" not in producer.names()
    assert producer.names()[-1] == "commit_transaction"
    assert txn.state is TxnState.IDLE


def test_a_retriable_commit_error_is_retried_then_succeeds(clock: FakeTime) -> None:
    txn, producer = new_transaction(deadline_s=10.0)
    txn.begin()
    producer.script["commit_transaction"] = [
        kafka_error(KafkaError._TIMED_OUT, retriable=True),
        kafka_error(KafkaError.COORDINATOR_NOT_AVAILABLE, retriable=True),
        None,
    ]

    txn.commit(OFFSETS, GROUP_METADATA)

    assert producer.names().count("commit_transaction") == 3
    assert clock.sleeps == [0.1, 0.1]
    assert txn.state is TxnState.IDLE


def test_a_retriable_send_offsets_error_is_retried(clock: FakeTime) -> None:
    txn, producer = new_transaction()
    txn.begin()
    producer.script["send_offsets_to_transaction"] = [
        kafka_error(KafkaError._TIMED_OUT, retriable=True)
    ]

    txn.commit(OFFSETS, GROUP_METADATA)

    assert producer.names().count("send_offsets_to_transaction") == 2
    assert producer.names().count("commit_transaction") == 1
    assert txn.state is TxnState.IDLE


def test_a_commit_still_retriable_at_the_deadline_is_indeterminate_and_fatal(
    clock: FakeTime,
) -> None:
    txn, producer = new_transaction(deadline_s=1.0)
    txn.begin()
    producer.script["commit_transaction"] = [
        kafka_error(KafkaError._TIMED_OUT, retriable=True) for _ in range(100)
    ]

    with pytest.raises(TransactionError, match="commit_transaction failed") as raised:
        txn.commit(OFFSETS, GROUP_METADATA)

    assert raised.value.fatal is True
    assert raised.value.retriable is True
    assert raised.value.requires_abort is False
    assert txn.state is TxnState.BROKEN
    # 0.1 s between tries within a 1 s deadline: about ten tries, and then it gives up
    assert 9 <= producer.names().count("commit_transaction") <= 12


def test_an_abortable_commit_error_requires_abort_and_keeps_it_open(clock: FakeTime) -> None:
    txn, producer = new_transaction()
    txn.begin()
    producer.script["commit_transaction"] = [
        kafka_error(KafkaError._MSG_TIMED_OUT, abortable=True, retriable=True)
    ]

    with pytest.raises(TransactionError) as raised:
        txn.commit(OFFSETS, GROUP_METADATA)

    assert raised.value.requires_abort is True
    assert raised.value.fatal is False
    assert producer.names().count("commit_transaction") == 1
    assert txn.state is TxnState.OPEN

    txn.abort()

    assert state_of(txn) is TxnState.IDLE
    assert producer.names()[-1] == "abort_transaction"


def test_a_fenced_commit_is_fatal_with_code_fenced(clock: FakeTime) -> None:
    txn, producer = new_transaction()
    txn.begin()
    producer.script["commit_transaction"] = [
        kafka_error(KafkaError._FENCED, "fenced by newer epoch", fatal=True)
    ]

    with pytest.raises(TransactionError) as raised:
        txn.commit(OFFSETS, GROUP_METADATA)

    assert raised.value.code == "_FENCED"
    assert raised.value.fatal is True
    assert txn.state is TxnState.BROKEN
    assert producer.names().count("commit_transaction") == 1


def test_a_generic_fatal_after_the_callback_reported_fencing_is_fenced(clock: FakeTime) -> None:
    txn, producer = new_transaction()
    txn.begin()
    fenced = KafkaError(KafkaError._FENCED, "Producer fenced by newer instance", fatal=True)
    # librdkafka reports the reason through error_cb, served by the poll() in _map
    producer.script["poll"] = [lambda: producer.error_cb(fenced)]
    producer.script["commit_transaction"] = [
        kafka_error(KafkaError._FATAL, "Local: Fatal error", fatal=True)
    ]

    with pytest.raises(TransactionError) as raised:
        txn.commit(OFFSETS, GROUP_METADATA)

    assert raised.value.code == "_FENCED"
    assert raised.value.fatal is True
    assert "fatal reason: _FENCED" in raised.value.message
    assert txn.fatal_reason is fenced
    assert txn.state is TxnState.BROKEN


def test_a_generic_fatal_without_a_fenced_reason_keeps_its_code(clock: FakeTime) -> None:
    txn, producer = new_transaction()
    txn.begin()
    producer.script["commit_transaction"] = [
        kafka_error(KafkaError._FATAL, "Local: Fatal error", fatal=True)
    ]

    with pytest.raises(TransactionError) as raised:
        txn.commit(OFFSETS, GROUP_METADATA)

    assert raised.value.code == "_FATAL"
    assert txn.state is TxnState.BROKEN


def test_a_fatal_error_raised_by_poll_is_kept_as_the_reason(clock: FakeTime) -> None:
    txn, producer = new_transaction()
    fenced = KafkaError(KafkaError.PRODUCER_FENCED, "fenced", fatal=True)
    producer.script["poll"] = [KafkaException(fenced)]

    txn.poll()

    assert txn.fatal_reason is fenced


def test_the_error_callback_keeps_only_fatal_errors(clock: FakeTime) -> None:
    txn, producer = new_transaction()

    producer.error_cb(KafkaError(KafkaError._TRANSPORT, "blip"))
    assert txn.fatal_reason is None

    fatal = KafkaError(KafkaError._FENCED, "fenced", fatal=True)
    producer.error_cb(fatal)
    assert txn.fatal_reason is fatal


# --- abort and reset ----------------------------------------------------------------------------


def test_abort_flushes_before_abort_transaction(clock: FakeTime) -> None:
    txn, producer = new_transaction(deadline_s=10.0)
    txn.begin()
    txn.produce("out", b"v", None, None)

    txn.abort()

    assert producer.names()[-2:] == ["flush", "abort_transaction"]
    flush_args = next(args for name, args in producer.calls if name == "flush")
    assert flush_args == (5.0,)
    assert txn.state is TxnState.IDLE


def test_abort_still_aborts_when_the_flush_fails(clock: FakeTime) -> None:
    txn, producer = new_transaction()
    txn.begin()
    producer.script["flush"] = [kafka_error(KafkaError._FATAL, fatal=True)]

    txn.abort()

    assert producer.names()[-2:] == ["flush", "abort_transaction"]
    assert txn.state is TxnState.IDLE


def test_a_fatal_abort_error_breaks_the_transaction(clock: FakeTime) -> None:
    txn, producer = new_transaction()
    txn.begin()
    producer.script["abort_transaction"] = [kafka_error(KafkaError.INVALID_TXN_STATE)]

    with pytest.raises(TransactionError, match="abort_transaction failed") as raised:
        txn.abort()

    assert raised.value.fatal is True
    assert txn.state is TxnState.BROKEN


def test_reset_creates_a_new_producer_and_inits_it(clock: FakeTime) -> None:
    txn, old = new_transaction()
    txn.begin()
    txn.produce("out", b"v", None, None)
    old.script["commit_transaction"] = [kafka_error(KafkaError._FATAL, fatal=True)]
    with pytest.raises(TransactionError):
        txn.commit(OFFSETS, GROUP_METADATA)
    assert txn.state is TxnState.BROKEN

    txn.reset()

    assert len(FakeProducer.instances) == 2
    new = FakeProducer.instances[-1]
    assert new is not old
    assert new.names() == ["init_transactions"]
    assert new.config["transactional.id"] == "orders.validate.0"
    assert old.names()[-1] == "flush"
    assert state_of(txn) is TxnState.IDLE
    assert txn.records == 0
    assert txn.fatal_reason is None

    txn.begin()
    assert new.names()[-1] == "begin_transaction"


def test_close_aborts_an_open_transaction_and_flushes(clock: FakeTime) -> None:
    txn, producer = new_transaction()
    txn.begin()

    txn.close(timeout_s=2.0)

    assert producer.names()[-3:] == ["flush", "abort_transaction", "flush"]
    assert producer.calls[-1] == ("flush", (2.0,))
    assert txn.state is TxnState.IDLE


# --- a call that never returns (librdkafka#5511: the broker-restart hang) ------------------------


def hang_until(release: threading.Event) -> Callable[[], None]:
    """A scripted step that blocks, as the broker-restart hang does, until ``release`` is set."""

    def step() -> None:
        release.wait(10)

    return step


class Cluster:
    """Stands in for the probe of a stuck call: does a fresh client get metadata?"""

    def __init__(self) -> None:
        self.up = True
        self.asked = 0

    def answers(self, *_txn: Transaction) -> bool:
        self.asked += 1
        return self.up


@pytest.fixture
def short_calls(monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """Calls count as stuck after 0.1 s of real time instead of 5 + 2 s; the broker answers."""
    monkeypatch.setattr(transaction, "_CALL_TIMEOUT_S", 0.05)
    monkeypatch.setattr(transaction, "_CALL_GRACE_S", 0.05)
    cluster = Cluster()
    monkeypatch.setattr(Transaction, "_cluster_answers", cluster.answers)
    return cluster


def test_every_call_gets_at_most_the_call_timeout(clock: FakeTime) -> None:
    txn, producer = new_transaction(deadline_s=20.0)
    txn.begin()

    txn.commit(OFFSETS, GROUP_METADATA)

    timed = ("send_offsets_to_transaction", "commit_transaction")
    timeouts = {name: args[-1] for name, args in producer.calls if name in timed}
    assert timeouts["send_offsets_to_transaction"] == transaction._CALL_TIMEOUT_S
    assert timeouts["commit_transaction"] == transaction._CALL_TIMEOUT_S
    assert producer.calls[0] == ("init_transactions", (transaction._CALL_TIMEOUT_S,))


def test_a_stuck_send_offsets_abandons_the_producer_and_reset_recreates_it(
    clock: FakeTime, short_calls: Cluster
) -> None:
    txn, producer = new_transaction()
    release = threading.Event()
    producer.script = {"send_offsets_to_transaction": [hang_until(release)]}
    txn.begin()

    with pytest.raises(TransactionError, match="_STUCK") as raised:
        txn.commit(OFFSETS, GROUP_METADATA)
    assert raised.value.code == "_STUCK"
    assert raised.value.fatal is True
    assert state_of(txn) is TxnState.BROKEN

    txn.reset()
    release.set()

    assert len(FakeProducer.instances) == 2
    assert "flush" not in producer.names()  # never touched again while the call is inside it
    assert FakeProducer.instances[-1].names() == ["init_transactions"]
    assert state_of(txn) is TxnState.IDLE


def test_a_slow_call_while_the_broker_is_down_is_waited_for(
    clock: FakeTime, short_calls: Cluster
) -> None:
    txn, producer = new_transaction()
    short_calls.up = False  # the call waits for the broker, as librdkafka's would
    release = threading.Event()
    producer.script = {"send_offsets_to_transaction": [hang_until(release)]}
    threading.Timer(0.5, release.set).start()  # the broker is back: the call returns
    txn.begin()

    txn.commit(OFFSETS, GROUP_METADATA)

    assert state_of(txn) is TxnState.IDLE
    assert len(FakeProducer.instances) == 1
    assert short_calls.asked >= 1


def test_a_stuck_init_transactions_is_retried_on_a_fresh_producer(
    clock: FakeTime, short_calls: Cluster
) -> None:
    release = threading.Event()

    class StuckOnce(FakeProducer):
        def __init__(self, config: dict[str, Any]) -> None:
            super().__init__(config)
            if len(FakeProducer.instances) == 1:
                self.script = {"init_transactions": [hang_until(release)]}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transaction, "Producer", StuckOnce)
        txn = Transaction(CONFIG, deadline_s=10.0)
    release.set()

    assert len(FakeProducer.instances) == 2
    assert state_of(txn) is TxnState.IDLE


def test_close_leaves_an_abandoned_producer_alone(clock: FakeTime, short_calls: Cluster) -> None:
    txn, producer = new_transaction()
    release = threading.Event()
    producer.script = {"commit_transaction": [hang_until(release)]}
    txn.begin()
    with pytest.raises(TransactionError, match="_STUCK"):
        txn.commit({}, GROUP_METADATA)

    txn.close()
    release.set()

    assert producer.names()[-1] == "commit_transaction"


def test_an_abandoned_producers_fencing_is_not_its_successors_reason(
    clock: FakeTime, short_calls: Cluster
) -> None:
    txn, producer = new_transaction()
    release = threading.Event()
    producer.script = {"send_offsets_to_transaction": [hang_until(release)]}
    txn.begin()
    with pytest.raises(TransactionError, match="_STUCK"):
        txn.commit(OFFSETS, GROUP_METADATA)
    txn.reset()
    release.set()

    # the successor's init_transactions fenced the abandoned one, which now says so
    producer.error_cb(kafka_error(KafkaError._FENCED, fatal=True).args[0])
    assert txn.fatal_reason is None
    # the successor's own fatal errors still count
    FakeProducer.instances[-1].error_cb(kafka_error(KafkaError._FENCED, fatal=True).args[0])
    assert txn.fatal_reason is not None


def test_reset_waits_for_a_cluster_that_does_not_answer(
    clock: FakeTime, short_calls: Cluster
) -> None:
    txn, _ = new_transaction(deadline_s=1.0)
    short_calls.up = False  # the broker is down for longer than the deadline

    class Down(FakeProducer):
        def __init__(self, config: dict[str, Any]) -> None:
            super().__init__(config)
            # four calls of 0.6 s each time out (2.4 s, past the 1 s deadline), then it is back
            self.script = {"init_transactions": [self.timeout] * 4}

        def timeout(self) -> None:
            clock.now += 0.6
            raise kafka_error(KafkaError._TIMED_OUT, retriable=True)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transaction, "Producer", Down)
        txn.reset()

    assert state_of(txn) is TxnState.IDLE
    assert FakeProducer.instances[-1].names() == ["init_transactions"] * 5
    assert short_calls.asked >= 1


def test_a_new_transaction_does_not_wait_for_a_cluster_that_does_not_answer(
    clock: FakeTime, short_calls: Cluster
) -> None:
    short_calls.up = False

    class Down(FakeProducer):
        def __init__(self, config: dict[str, Any]) -> None:
            super().__init__(config)
            self.script = {"init_transactions": [self.timeout] * 5}

        def timeout(self) -> None:
            clock.now += 5.0
            raise kafka_error(KafkaError._TIMED_OUT, retriable=True)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transaction, "Producer", Down)
        with pytest.raises(TransactionError, match="_TIMED_OUT"):
            Transaction(CONFIG, deadline_s=10.0)
