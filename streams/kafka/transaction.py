"""One Kafka transaction at a time, as an explicit state machine.

::

    IDLE --begin--> OPEN --commit--> IDLE
                     |  \\--abort---> IDLE
                     |   (abortable error: caller aborts, then rewinds its consumer)
    any --fatal error or fencing--> BROKEN   (the producer must be recreated: ``reset()``)

The object owns the transactional producer, the records produced in the open transaction and
the input offsets that go with them. Commit sends the offsets with the consumer's group
metadata (KIP-447), then commits; both are retried on retriable errors within a deadline.
An indeterminate commit (still retriable at the deadline) marks the producer BROKEN: a new
producer with the same transactional.id resolves the outcome at ``init_transactions``, and the
caller then rewinds to the committed offsets, which reflect what really happened.

Every transactional call gets at most ``_CALL_TIMEOUT_S`` and runs in a helper thread that is
given ``_CALL_GRACE_S`` more to return. A call still running then, while the cluster answers
a fresh client's metadata request, is *stuck* (librdkafka 2.16:
``send_offsets_to_transaction()`` never returns when the group coordinator it cached was
decommissioned by a re-bootstrap, which every restart of a single-broker cluster causes:
librdkafka#5511, #5456). The stuck producer is abandoned, never touched again (the helper
thread drops the last reference if the call ever returns), and the call fails fatal with code
``_STUCK``: the caller recreates the producer, whose ``init_transactions`` fences the old one
and aborts its open transaction, and rewinds.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.exceptions import OutputRejectedError, TransactionError
from streams.kafka.errors import FENCED_CODES, from_kafka_exception

__all__ = ["Refusal", "Transaction", "TxnState"]

log = logging.getLogger("streams.transaction")

# Delivery errors that say "this record will never be accepted" (not "try again").
_REJECTED = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_RECORD,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
    }
)

# The refusals that a smaller record would not get (the topic's or the producer's size limit).
_TOO_LARGE = frozenset(
    {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG_SIZE, KafkaError.RECORD_LIST_TOO_LARGE}
)


@dataclasses.dataclass(frozen=True)
class Refusal:
    """The broker refused a record for good: which input record it came from, and why.

    ``too_large``: refused for its size (or the size of the batch it was in), so the topic's
    limit may have changed since the producer was set up.
    """

    origin: tuple[str, int, int]
    topic: str
    too_large: bool
    reason: str


# When the local queue is full, serve delivery reports for this long before trying again.
_QUEUE_FULL_POLL_S = 0.05
# The timeout given to one transactional call (the deadline still bounds the retries), and how
# much longer it may run, with the broker answering, before it counts as stuck. A healthy call
# returns within its timeout (a retriable _TIMED_OUT at worst); the broker-restart hang never
# returns at all. 5 + 2 s: restarts of a local single broker recovered within 10-14 s.
_CALL_TIMEOUT_S = 5.0
_CALL_GRACE_S = 2.0


class _Stuck(Exception):  # noqa: N818 - a control-flow signal
    """A transactional call did not return although the cluster answers."""


# The settings a probe client copies from the producer's: how to reach and log in to the cluster.
_CONNECTION_KEYS = ("bootstrap.servers", "security.protocol", "sasl.", "ssl.", "client.dns.lookup")


def _bounded(
    call: Callable[[], None], limit_s: float, until: float, answers: Callable[[], bool]
) -> None:
    """Run ``call`` in a daemon thread (librdkafka releases the GIL); _Stuck if it hangs.

    Past ``limit_s`` the call is stuck if the cluster ``answers()`` meanwhile: a healthy call
    returns within its timeout once the broker is up. While the broker does not answer, the call
    may be waiting for it (``send_offsets_to_transaction`` waits for its request's own timeout,
    socket.timeout.ms): it is given until ``until`` (monotonic). A daemon thread: a call that
    never returns must not keep the process from exiting.
    """
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as error:  # noqa: BLE001 - handed to the caller below
            outcome.append(error)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, name="txn-call", daemon=True)
    thread.start()
    thread.join(limit_s)
    while not outcome:
        if time.monotonic() >= until or answers():
            thread.join(0.1)  # it may have returned meanwhile
            if not outcome:
                raise _Stuck(f"no return after {limit_s:.0f} s, the broker answering")
            break
        thread.join(_CALL_GRACE_S)
    if outcome[0] is not None:
        raise outcome[0]


class TxnState(enum.Enum):
    IDLE = "idle"
    OPEN = "open"
    BROKEN = "broken"


_ALLOWED = {
    ("begin", TxnState.IDLE),
    ("produce", TxnState.OPEN),
    ("commit", TxnState.OPEN),
    ("abort", TxnState.OPEN),
    ("abort", TxnState.IDLE),
}
# The state changes the diagram above allows: (from, to). Anything may break; only reset()
# leaves BROKEN (to IDLE, with a new producer).
_TRANSITIONS = {
    (TxnState.IDLE, TxnState.OPEN),
    (TxnState.OPEN, TxnState.IDLE),
    (TxnState.IDLE, TxnState.IDLE),
    (TxnState.IDLE, TxnState.BROKEN),
    (TxnState.OPEN, TxnState.BROKEN),
    (TxnState.BROKEN, TxnState.BROKEN),
    (TxnState.BROKEN, TxnState.IDLE),
}


class Transaction:
    """The transactional producer of one worker and the transaction it has open."""

    def __init__(
        self,
        producer_config: Mapping[str, Any],
        *,
        deadline_s: float,
        on_rejected: Callable[[Refusal], None] | None = None,
    ) -> None:
        self._on_rejected = on_rejected
        self._config = dict(producer_config)
        self.transactional_id = str(self._config["transactional.id"])
        self.fatal_reason: KafkaError | None = None
        self._deadline_s = deadline_s
        self._abandoned = False  # True: a call on self._producer is stuck (never touch it again)
        self._generation = 0  # of the current producer: an older one's errors are not ours
        self._producer = self._new_producer()
        self.state = TxnState.IDLE  # the initial state: no transition to check
        self.opened_at = 0.0
        self.records = 0
        self.delivery_error: str | None = None
        # Delivery reports are attributed per transaction: one callback for every record, none
        # built per produce (none at all without ``on_rejected``: a failed delivery fails the
        # commit anyway). A refusal the broker makes (``_REJECTED``) needs the input record
        # it belongs to, so once one arrives unattributed, produces carry their origin (a
        # callback each) until a transaction commits: the aborted batch, read again, is
        # refused again, this time with its origin, and that record is routed aside.
        self.attributing = False
        self._on_delivery_any = on_rejected and functools.partial(self._on_delivery, None)

    # -- lifecycle -------------------------------------------------------------------------

    def _on_error(self, error: KafkaError) -> None:
        # librdkafka reports the reason of a fatal error here (fenced, say); the calls that fail
        # afterwards only say "_FATAL"
        if error.fatal():
            self.fatal_reason = error
            log.error("producer fatal error: %s: %s", error.name(), error.str())

    def _map(self, error: KafkaException, operation: str) -> TransactionError:
        try:
            self._producer.poll(0)  # serve a pending error callback first
        except KafkaException as polled:
            # the client raises the fatal error itself from poll() once it is known
            if polled.args and isinstance(polled.args[0], KafkaError):
                self.fatal_reason = self.fatal_reason or polled.args[0]
        mapped = from_kafka_exception(error, operation=operation)
        reason = self.fatal_reason
        if reason is not None and mapped.fatal and reason.code() in FENCED_CODES:
            mapped = mapped.replace(
                code="_FENCED",
                message=f"{mapped.message} (fatal reason: {reason.name()}: {reason.str()})",
            )
        assert isinstance(mapped, TransactionError)  # noqa: S101 - transactional=True
        return mapped

    def _to(self, state: TxnState) -> None:
        """Move to ``state``; a change the state diagram does not allow is a bug, said loudly."""
        if (self.state, state) not in _TRANSITIONS:
            raise TransactionError(
                f"transaction state {self.state.value} -> {state.value} is not allowed",
                fatal=True,
            )
        self.state = state

    def _new_producer(self, *, wait_for_cluster: bool = False) -> Producer:
        """A producer whose init_transactions succeeded, within the deadline.

        ``wait_for_cluster``: past the deadline, keep trying for as long as the cluster does not
        answer at all (a broker restart that takes longer than the deadline): a new process
        could do no better, and the worker's watchdog still bounds the wait.
        """
        self.fatal_reason = None
        producer = self._producer_instance()
        deadline = time.monotonic() + self._deadline_s
        while True:
            timeout = self._call_timeout(deadline)
            try:
                _bounded(
                    lambda: producer.init_transactions(timeout),  # noqa: B023 - called at once
                    timeout + _CALL_GRACE_S,
                    deadline + _CALL_GRACE_S,
                    self._cluster_answers,
                )
            except _Stuck:
                # walk away from it (see the module docstring) and try with a fresh one
                log.warning("init_transactions is stuck; abandoning that producer")
                producer = self._producer_instance()
                if time.monotonic() < deadline:
                    continue
                raise TransactionError(
                    "init_transactions failed: _STUCK: no return within the deadline",
                    code="_STUCK",
                    fatal=True,
                ) from None
            except KafkaException as error:
                mapped = from_kafka_exception(error, operation="init_transactions")
                if mapped.retriable and time.monotonic() < deadline:
                    continue  # resumable: calling again resumes the background work
                if mapped.retriable and wait_for_cluster and not self._cluster_answers():
                    log.warning("init_transactions: the cluster does not answer; waiting for it")
                    deadline = time.monotonic() + self._deadline_s
                    continue
                raise mapped from error
            self._abandoned = False
            return producer

    def _producer_instance(self) -> Producer:
        """A new producer; the error callbacks of the ones before it are ignored from now on.

        An abandoned producer is fenced by its successor: that "fenced by a newer instance"
        must not count as the successor's fatal reason.
        """
        self._generation += 1
        generation = self._generation

        def on_error(error: KafkaError) -> None:
            if generation == self._generation:
                self._on_error(error)

        return Producer({**self._config, "error_cb": on_error})

    def _cluster_answers(self) -> bool:
        """True if a fresh client gets metadata from the cluster (the stuck producer may not)."""
        config = {k: v for k, v in self._config.items() if k.startswith(_CONNECTION_KEYS)}
        admin = AdminClient({**config, "log_level": 0})
        try:
            return bool(admin.list_topics(timeout=1.0).brokers)
        except KafkaException:
            return False

    @staticmethod
    def _call_timeout(deadline: float) -> float:
        return min(_CALL_TIMEOUT_S, max(1.0, deadline - time.monotonic()))

    def reset(self, producer_config: Mapping[str, Any] | None = None) -> None:
        """Recreate the producer (same transactional.id): fences and resolves the old one.

        ``producer_config`` replaces the settings (the transactional.id stays the same).
        """
        if producer_config is not None:
            self._config = {**producer_config, "transactional.id": self.transactional_id}
        old = self._producer
        self._to(TxnState.BROKEN)
        if not self._abandoned:  # a stuck call may still be inside an abandoned one
            try:
                old.flush(0)
            except KafkaException:
                log.debug("flush of the broken producer failed", exc_info=True)
        del old
        self._producer = self._new_producer(wait_for_cluster=True)
        self._to(TxnState.IDLE)
        self.records = 0
        self.delivery_error = None

    def _require(self, operation: str) -> None:
        if (operation, self.state) not in _ALLOWED:
            raise TransactionError(
                f"{operation} is not allowed while the transaction is {self.state.value}",
                fatal=True,
            )

    @property
    def is_open(self) -> bool:
        return self.state is TxnState.OPEN

    @property
    def age_s(self) -> float:
        return time.monotonic() - self.opened_at if self.is_open else 0.0

    # -- operations ------------------------------------------------------------------------

    def begin(self) -> None:
        self._require("begin")
        try:
            self._producer.begin_transaction()
        except KafkaException as error:
            self._to(TxnState.BROKEN)
            raise self._map(error, "begin_transaction") from error
        self._to(TxnState.OPEN)
        self.opened_at = time.monotonic()
        self.records = 0
        self.delivery_error = None

    def _on_delivery(self, origin: tuple[str, int, int] | None, error: Any, message: Any) -> None:
        if error is None:
            return
        if self.delivery_error is None:
            # the transaction is now abortable; commit will fail and say so
            self.delivery_error = str(error)
        if self._on_rejected is None or error.code() not in _REJECTED:
            return
        if origin is None:
            self.attributing = True  # the next pass says which input record it was
            log.info("a record was refused without its origin: the batch is read again")
            return
        self._on_rejected(
            Refusal(
                origin=origin,
                topic=str(message.topic() if message is not None else ""),
                too_large=error.code() in _TOO_LARGE,
                reason=f"the broker refused a record for {message.topic()}: {error.str()}",
            )
        )

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None,
        *,
        origin: tuple[str, int, int] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Produce in the open transaction; ``partition`` None lets the partitioner choose.

        ``timestamp_ms`` None stamps the record with the time of the write (a replay passes
        the record's original timestamp).

        Raises ``OutputRejectedError`` (the transaction still open and usable) when the client
        refuses the record itself, before queueing it: too large for ``message.max.bytes``.
        """
        if self.state is not TxnState.OPEN:  # the one check of _require, inline: hot path
            self._require("produce")
        while True:
            try:
                self._producer.produce(
                    topic,
                    value,
                    key,
                    partition=-1 if partition is None else partition,  # -1: partitioner's
                    headers=list(headers) if headers else None,
                    on_delivery=functools.partial(self._on_delivery, origin)
                    if self.attributing and origin is not None
                    else self._on_delivery_any,
                    timestamp=timestamp_ms or 0,  # 0: the client's clock
                )
            except BufferError:
                self._producer.poll(_QUEUE_FULL_POLL_S)
                continue
            except KafkaException as error:
                refused = error.args[0] if error.args else None
                if isinstance(refused, KafkaError) and refused.code() in _REJECTED:
                    # refused before it was queued (too large for this producer): the
                    # transaction is untouched, and the caller routes the record aside
                    raise OutputRejectedError(
                        f"the producer refused a record for {topic}: {refused.str()}"
                    ) from error
                mapped = self._map(error, f"produce to {topic}")
                if mapped.fatal:
                    self._to(TxnState.BROKEN)
                raise mapped from error
            break
        self.records += 1

    def poll(self) -> None:
        """Serve delivery reports (cheap; call once per loop); a fatal error is kept for later."""
        try:
            self._producer.poll(0)
        except KafkaException as error:
            if error.args and isinstance(error.args[0], KafkaError):
                self.fatal_reason = self.fatal_reason or error.args[0]

    def commit(self, offsets: Mapping[tuple[str, int], int], group_metadata: Any) -> None:
        """Send offsets (next offset to read, per partition) and commit, within the deadline.

        Raises TransactionError: ``requires_abort`` -> call ``abort()`` and rewind;
        ``fatal`` -> call ``reset()`` and rewind. State is IDLE after success.
        """
        self._require("commit")
        deadline = time.monotonic() + self._deadline_s
        if offsets:
            partitions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            self._retrying(
                lambda timeout: self._producer.send_offsets_to_transaction(
                    partitions, group_metadata, timeout
                ),
                "send_offsets_to_transaction",
                deadline,
            )
        self._retrying(self._producer.commit_transaction, "commit_transaction", deadline)
        self._to(TxnState.IDLE)
        self.attributing = False

    def abort(self) -> None:
        """Abort the open transaction; a failing abort leaves the producer BROKEN."""
        self._require("abort")
        if self.state is TxnState.IDLE:
            return
        deadline = time.monotonic() + self._deadline_s
        # Let in-flight produce requests (and their AddPartitionsToTxn) finish first: aborting
        # while they are in flight got INVALID_TXN_STATE from a 4.1 broker here (fatal).
        try:
            self._producer.flush(min(5.0, self._deadline_s))
        except KafkaException:
            log.debug("flush before abort failed", exc_info=True)
        try:
            self._retrying(self._producer.abort_transaction, "abort_transaction", deadline)
        except TransactionError:
            self._to(TxnState.BROKEN)  # only a new producer can resolve a failed abort
            raise
        self._to(TxnState.IDLE)

    def _retrying(self, call: Callable[[float], None], operation: str, deadline: float) -> None:
        """``call(timeout)`` until it succeeds; retriable errors are retried until ``deadline``."""
        while True:
            timeout = self._call_timeout(deadline)
            try:
                _bounded(
                    lambda: call(timeout),  # noqa: B023 - called at once
                    timeout + _CALL_GRACE_S,
                    deadline + _CALL_GRACE_S,
                    self._cluster_answers,
                )
            except _Stuck as stuck:
                # librdkafka will not return (see the module docstring): abandon the producer;
                # the caller recreates it, which fences this one and aborts its transaction
                self._abandoned = True
                self._to(TxnState.BROKEN)
                raise TransactionError(
                    f"{operation} failed: _STUCK: {stuck}; the producer is abandoned",
                    code="_STUCK",
                    fatal=True,
                ) from None
            except KafkaException as error:
                mapped = self._map(error, operation)
                if mapped.code == "_FENCED":
                    self._to(TxnState.BROKEN)
                    raise mapped.replace(fatal=True) from error
                if mapped.retriable and not mapped.requires_abort:
                    if time.monotonic() < deadline:
                        log.warning("%s: retriable error, retrying: %s", operation, mapped)
                        time.sleep(0.1)
                        continue
                    # indeterminate: the outcome is unknown; a new producer resolves it
                    self._to(TxnState.BROKEN)
                    raise mapped.replace(fatal=True) from error
                if mapped.fatal and not mapped.requires_abort:
                    self._to(TxnState.BROKEN)
                raise mapped from error
            return

    def close(self, timeout_s: float = 5.0) -> None:
        if self._abandoned:
            return  # a stuck call is still inside it; the process exit ends it
        if self.is_open:
            try:
                self.abort()
            except TransactionError:
                log.warning("abort at close failed; the coordinator will time it out")
        self._producer.flush(timeout_s)
