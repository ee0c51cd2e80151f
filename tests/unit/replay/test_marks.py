"""The ledger as the lag view reads it: active tasks, replay marks, the follower (no broker)."""
# ruff: noqa: ARG002 - the fake consumer keeps the signatures of confluent_kafka's Consumer

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException

from streams.config import KafkaSettings
from streams.replay import ledger as ledger_module
from streams.replay.ledger import LedgerFollower, LedgerState
from streams.replay.task import Status, Task
from streams.replay.tasks import RESET_WINDOW_MS, ReplayMarks, active_in
from streams.spec import REPLAY_LEDGER_TOPIC
from tests.unit.replay.fakes import NOW, FakeMessage

KAFKA = KafkaSettings(bootstrap_servers="127.0.0.1:1")


def _task(task_id: str, kind: str, **fields: Any) -> Task:
    base: dict[str, Any] = {
        "id": task_id,
        "kind": kind,
        "pipeline": "orders",
        "stage": "orders.enrich",
        "source": "" if kind == "reset" else "orders.enrich.dlq",
        "destination": "" if kind == "reset" else "input",
        "affects": ["orders.enrich"],
        "started_ms": NOW - 60_000,
        "updated_ms": NOW - 1_000,
    }
    return Task.model_validate({**base, **fields})


def _ledger(*tasks: Task, cancels: set[str] | None = None) -> LedgerState:
    return LedgerState(tasks={t.id: t for t in tasks}, cancels=cancels or set())


def test_active_tasks_are_running_redrives_and_recent_resets_per_affected_group() -> None:
    ledger = _ledger(
        _task("d-run", "redrive", moved=700, to_move=10_000, affects=["a", "b"]),
        _task("d-done", "redrive", status=Status.COMPLETED),
        _task("d-silent", "redrive", updated_ms=NOW - 31_000),  # shown INTERRUPTED: still active
        _task("r-new", "reset", status=Status.COMPLETED, started_ms=NOW - RESET_WINDOW_MS),
        _task("r-old", "reset", status=Status.COMPLETED, started_ms=NOW - RESET_WINDOW_MS - 1),
    )
    found = {(a.group, a.task): a for a in active_in(ledger, NOW)}
    assert set(found) == {
        ("a", "d-run"),
        ("b", "d-run"),
        ("orders.enrich", "d-silent"),
        ("orders.enrich", "r-new"),
    }
    assert found["orders.enrich", "d-silent"].status == "INTERRUPTED"
    mark = found["a", "d-run"].mark()
    assert (mark.kind, mark.moved, mark.to_move, mark.until_ms) == ("redrive", 700, 10_000, None)
    reset = found["orders.enrich", "r-new"].mark()
    assert reset.until_ms == reset.started_ms + RESET_WINDOW_MS


def test_a_cancelled_interrupted_task_is_no_longer_marked() -> None:
    ledger = _ledger(
        _task("d-1", "redrive", status=Status.INTERRUPTED), cancels={"d-1"}
    )  # shown CANCELLED
    assert active_in(ledger, NOW) == []


class _Follower:
    def __init__(self, state: LedgerState) -> None:
        self.state = state
        self.polls = 0

    def poll(self) -> LedgerState:
        self.polls += 1
        return self.state

    def reconnect(self) -> None: ...

    def close(self) -> None: ...


def test_replay_marks_group_the_active_tasks_by_group() -> None:
    follower = _Follower(
        _ledger(
            _task("d-run", "redrive", affects=["a", "b"]),
            _task("r-new", "reset", status=Status.COMPLETED, affects=["a"]),
        )
    )
    marks = ReplayMarks(KAFKA, follower=follower)  # type: ignore[arg-type]
    found = marks.marks(NOW)
    assert follower.polls == 1
    assert {g: sorted(m.task for m in ms) for g, ms in found.items()} == {
        "a": ["d-run", "r-new"],
        "b": ["d-run"],
    }


# -- LedgerFollower over a fake consumer ---------------------------------------------------


class _Metadata:
    def __init__(self, exists: bool) -> None:
        topic = type("T", (), {"error": None, "partitions": {0: object()}})()
        self.topics = {REPLAY_LEDGER_TOPIC: topic} if exists else {}


class _EOF:
    def error(self) -> KafkaError:
        return KafkaError(KafkaError._PARTITION_EOF)


class _Consumer:
    """Answers list_topics from ``exists``; consume() hands out ``batches`` one per call."""

    made: list[_Consumer] = []  # noqa: RUF012 - the instances a test made, newest last
    exists = False  # whether the ledger topic exists, for every instance

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.metadata_calls = 0
        self.assigned: list[Any] = []
        self.batches: list[list[Any]] = []
        self.fail: KafkaException | None = None
        self.closed = False
        _Consumer.made.append(self)

    def list_topics(self, topic: str, timeout: float) -> _Metadata:
        self.metadata_calls += 1
        return _Metadata(_Consumer.exists)

    def assign(self, partitions: list[Any]) -> None:
        self.assigned = partitions

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        if self.fail is not None:
            raise self.fail
        return self.batches.pop(0) if self.batches else [_EOF()]

    def close(self) -> None:
        self.closed = True


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def consumers(monkeypatch: pytest.MonkeyPatch) -> list[_Consumer]:
    monkeypatch.setattr(_Consumer, "made", [])
    monkeypatch.setattr(_Consumer, "exists", False)
    monkeypatch.setattr(ledger_module, "Consumer", _Consumer)
    return _Consumer.made


def _record(task: Task, offset: int) -> FakeMessage:
    return FakeMessage(task.to_json(), key=f"task/{task.id}".encode(), offset=offset)


def test_a_missing_ledger_is_looked_for_once_per_recheck_interval(
    consumers: list[_Consumer],
) -> None:
    clock = _Clock()
    follower = LedgerFollower(KAFKA, recheck_s=30, clock=clock)
    for _ in range(5):  # every lag sample: no request after the first
        assert follower.poll().tasks == {}
    (consumer,) = consumers
    assert (consumer.metadata_calls, follower.topic_missing) == (1, True)
    clock.now += 31
    _Consumer.exists = True
    consumer.batches = [[_record(_task("d-1", "redrive"), 0), _EOF()]]
    assert set(follower.poll().tasks) == {"d-1"}
    assert consumer.metadata_calls == 2
    assert consumer.assigned[0].offset == OFFSET_BEGINNING


def test_the_follower_reads_only_what_was_added_and_never_raises(
    consumers: list[_Consumer],
) -> None:
    _Consumer.exists = True
    clock = _Clock()
    follower = LedgerFollower(KAFKA, recheck_s=30, clock=clock)
    first = _task("d-1", "redrive", moved=1)
    assert follower.poll().tasks == {}  # an empty ledger, read to its end
    (consumer,) = consumers
    assert (consumer.config["auto.offset.reset"], consumer.config["isolation.level"]) == (
        "earliest",
        "read_committed",
    )
    consumer.batches = [[_record(first, 0), _EOF()]]
    assert follower.poll().tasks["d-1"].moved == 1
    consumer.batches = [[_record(first.model_copy(update={"moved": 5}), 1), _EOF()]]
    assert follower.poll().tasks["d-1"].moved == 5
    assert consumer.metadata_calls == 1  # assigned once, then only read
    # a read error: the state read so far kept, no new consumer before the recheck interval
    consumer.fail = KafkaException(KafkaError(KafkaError._TRANSPORT))
    assert follower.poll().tasks["d-1"].moved == 5
    assert consumer.closed
    assert follower.poll().tasks["d-1"].moved == 5
    assert len(consumers) == 1
    clock.now += 31
    follower.poll()
    replacement = consumers[-1]
    assert replacement is not consumer
    assert replacement.assigned[0].offset == 2  # from the next unread offset
