"""The replay ledger: the compacted topic ``_streams.replay``, one record per task.

Keys are ``task/<id>`` (the task's latest state, ``streams.replay.task.Task`` as JSON) and
``cancel/<id>`` (a cancel request). Redrives and copies write their own record inside their
transactions; resets and cancel requests are written by a plain idempotent producer. Readers
read it ``read_committed`` from the start to its last stable offset. ``streams topics create``
makes the topic with the other internal topics.

``read_ledger`` reads the whole topic with a new consumer on each call (a command's single
look). ``LedgerFollower`` keeps one consumer and reads only what was added since its last
call, for a reader asked every few seconds (the lag view's replay marks); it never raises, and
a cluster without the topic costs it one metadata request per ``_MISSING_RECHECK_S``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from pydantic import ValidationError

from streams.config import KafkaSettings
from streams.exceptions import BadArgumentError, KafkaClientError, RefusedError
from streams.kafka.clients import reader_config
from streams.replay.task import Status, Task, status_of
from streams.spec import REPLAY_LEDGER_TOPIC

__all__ = [
    "CancelWatch",
    "LedgerFollower",
    "LedgerState",
    "read_ledger",
    "request_cancel",
    "require_ledger",
    "task_key",
    "write_task",
]

log = logging.getLogger("streams.replay")

_TIMEOUT_S = 30.0
# The follower's bounds. A lag sample waits at most _FOLLOW_BUDGET_S for the ledger (what is
# not read by then is read at the next sample), and looks for a missing ledger topic again
# only every _MISSING_RECHECK_S: without these a cluster with no ledger, or an open
# transaction of a redrive, would add seconds to every sample.
_FOLLOW_BUDGET_S = 2.0
_MISSING_RECHECK_S = 30.0
_METADATA_TIMEOUT_S = 5.0
_FOLLOW_BATCH = 500
_FETCH_WAIT_MS = 100
_TASK = "task/"
_CANCEL = "cancel/"


def task_key(task_id: str) -> bytes:
    return f"{_TASK}{task_id}".encode()


@dataclass
class LedgerState:
    """Every task the ledger holds, and the ids whose cancel was requested."""

    tasks: dict[str, Task] = field(default_factory=dict)
    cancels: set[str] = field(default_factory=set)

    def status(self, task: Task, now_ms: int) -> Status:
        return status_of(task, cancel_requested=task.id in self.cancels, now_ms=now_ms)

    def get(self, task_id: str) -> Task:
        try:
            return self.tasks[task_id]
        except KeyError:
            raise BadArgumentError(
                f"the replay ledger has no task {task_id!r}",
                hint="`streams dlq tasks MODULE:PIPELINE --stage S` lists the tasks",
            ) from None

    def recent(self, *, stage: str | None = None) -> list[Task]:
        """Tasks (of one stage, if given), newest first."""
        found = [t for t in self.tasks.values() if stage is None or t.stage == stage]
        return sorted(found, key=lambda t: (t.started_ms, t.id), reverse=True)


def _topic_exists(consumer: Consumer) -> bool:
    try:
        metadata = consumer.list_topics(REPLAY_LEDGER_TOPIC, timeout=_TIMEOUT_S)
    except KafkaException as error:
        raise KafkaClientError(f"cannot read the replay ledger: {error}") from error
    found = metadata.topics.get(REPLAY_LEDGER_TOPIC)
    return found is not None and found.error is None


def require_ledger(kafka: KafkaSettings) -> None:
    """Refuse (exit 3) when the ledger topic is missing: a task must be recorded to run."""
    consumer = Consumer(reader_config(kafka, group_id="_streams.replay.reader"))
    try:
        exists = _topic_exists(consumer)
    finally:
        consumer.close()
    if not exists:
        raise RefusedError(
            f"the replay ledger topic {REPLAY_LEDGER_TOPIC} does not exist",
            hint="create it with the pipeline's topics: streams topics create MODULE:PIPELINE",
        )


def read_ledger(kafka: KafkaSettings) -> LedgerState:
    """The whole ledger, read_committed, to its last stable offset (empty if it is missing)."""
    state = LedgerState()
    consumer = Consumer(reader_config(kafka, group_id="_streams.replay.reader"))
    try:
        if not _topic_exists(consumer):
            return state
        tp = TopicPartition(REPLAY_LEDGER_TOPIC, 0)
        low, end = consumer.get_watermark_offsets(tp, timeout=_TIMEOUT_S)
        if end <= low:
            return state
        consumer.assign([TopicPartition(REPLAY_LEDGER_TOPIC, 0, low)])
        deadline = time.monotonic() + _TIMEOUT_S
        while consumer.position([tp])[0].offset < end:
            if time.monotonic() > deadline:
                raise KafkaClientError(f"reading {REPLAY_LEDGER_TOPIC} timed out")
            for message in consumer.consume(500, timeout=0.5):
                error = message.error()
                if error is None:
                    _apply(state, message.key(), message.value())
                elif error.code() != KafkaError._PARTITION_EOF:  # noqa: SLF001
                    log.warning("ledger read: %s", error.str())
    finally:
        consumer.close()
    return state


def _apply(state: LedgerState, key: bytes | None, value: bytes | None) -> None:
    name = (key or b"").decode("utf-8", "replace")
    if name.startswith(_TASK):
        task_id = name.removeprefix(_TASK)
        if value is None:
            state.tasks.pop(task_id, None)  # a tombstone: the task was forgotten
            return
        try:
            state.tasks[task_id] = Task.from_json(value)
        except ValidationError as error:
            log.warning("ledger record %s is not a task, skipped: %s", name, error)
    elif name.startswith(_CANCEL):
        state.cancels.add(name.removeprefix(_CANCEL))


class LedgerFollower:
    """The ledger kept current by incremental reads; ``poll()`` never raises.

    One consumer, assigned to the ledger once it exists, reads what was added since the last
    call: after the first call a call costs no request when nothing changed. A read error is
    logged (once until a read succeeds again) and the state read so far is kept; the next call
    starts a new consumer at the next unread offset. Not thread-safe.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        budget_s: float = _FOLLOW_BUDGET_S,
        recheck_s: float = _MISSING_RECHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kafka = kafka
        self._budget_s = budget_s
        self._recheck_s = recheck_s
        self._clock = clock
        self.state = LedgerState()
        self._consumer: Consumer | None = None
        self._assigned = False
        self._next: int | None = None  # the offset to read next (None: from the log start)
        self._caught_up = False  # the last record read was followed by the partition's end
        self._looked_at: float | None = None  # when a missing topic was last looked for
        self._failing = False
        self.topic_missing = False

    def poll(self) -> LedgerState:
        """Read what was added to the ledger since the last call (within the budget)."""
        try:
            if self._assigned or self._assign():
                self._read()
        except (KafkaException, KafkaClientError) as error:
            if not self._failing:
                log.warning("cannot read %s (tried again later): %s", REPLAY_LEDGER_TOPIC, error)
            self._failing = True
            self.reconnect()
            self._looked_at = self._clock()  # not again before the recheck interval
            return self.state
        if self._failing:
            log.info("reading %s again", REPLAY_LEDGER_TOPIC)
        self._failing = False
        return self.state

    def _assign(self) -> bool:
        now = self._clock()
        if self._looked_at is not None and now - self._looked_at < self._recheck_s:
            return False
        self._looked_at = now
        if self._consumer is None:
            config = reader_config(self._kafka, group_id="_streams.replay.lag")
            # the broker answers a fetch at the end of the ledger after this long: the first
            # call waits that long to learn that an idle ledger was read to its end
            config["fetch.wait.max.ms"] = _FETCH_WAIT_MS
            # a next offset compaction removed: from the start again (re-applying older records
            # in order ends in the same state), never from the end
            config["auto.offset.reset"] = "earliest"
            self._consumer = Consumer(config)
        metadata = self._consumer.list_topics(REPLAY_LEDGER_TOPIC, timeout=_METADATA_TIMEOUT_S)
        found = metadata.topics.get(REPLAY_LEDGER_TOPIC)
        self.topic_missing = found is None or found.error is not None or not found.partitions
        if self.topic_missing:
            return False
        start = OFFSET_BEGINNING if self._next is None else self._next
        self._consumer.assign([TopicPartition(REPLAY_LEDGER_TOPIC, 0, start)])
        self._assigned = True
        return True

    def _read(self) -> None:
        consumer = self._consumer
        if consumer is None:  # assigned implies a consumer; a reconnect resets both
            return
        deadline = self._clock() + self._budget_s
        while True:
            batch = consumer.consume(_FOLLOW_BATCH, timeout=0 if self._caught_up else 0.05)
            for message in batch:
                error = message.error()
                if error is None:
                    _apply(self.state, message.key(), message.value())
                    offset = message.offset()
                    self._next = self._next if offset is None else offset + 1
                    self._caught_up = False
                elif error.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
                    self._caught_up = True
                else:
                    raise KafkaClientError(f"reading {REPLAY_LEDGER_TOPIC}: {error.str()}")
            if self._caught_up and len(batch) < _FOLLOW_BATCH:
                return
            if self._clock() > deadline:
                log.debug("%s not read to its end within %s s", REPLAY_LEDGER_TOPIC, self._budget_s)
                return

    def reconnect(self) -> None:
        """A new consumer at the next call, from the next unread offset; the state is kept."""
        self.close()
        self._looked_at = None
        self._caught_up = False

    def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            self._assigned = False
            consumer.close()


def _producer(kafka: KafkaSettings) -> Producer:
    return Producer({**kafka.client_config(), "enable.idempotence": True, "linger.ms": 0})


def _send(kafka: KafkaSettings, key: bytes, value: bytes) -> None:
    producer = _producer(kafka)
    failures: list[str] = []
    producer.produce(
        REPLAY_LEDGER_TOPIC,
        value,
        key,
        on_delivery=lambda error, _msg: failures.append(str(error)) if error else None,
    )
    if producer.flush(_TIMEOUT_S) or failures:
        raise KafkaClientError(
            f"cannot write to {REPLAY_LEDGER_TOPIC}: {', '.join(failures) or 'timed out'}"
        )


def write_task(kafka: KafkaSettings, task: Task) -> None:
    """Write a task's state outside any transaction (resets, and what cancel settles)."""
    _send(kafka, task_key(task.id), task.to_json())


def request_cancel(kafka: KafkaSettings, task_id: str, *, now_ms: int) -> None:
    _send(kafka, f"{_CANCEL}{task_id}".encode(), json.dumps({"at_ms": now_ms}).encode())


class CancelWatch:
    """Tells a running task, cheaply and often, whether its cancel has been requested."""

    def __init__(self, kafka: KafkaSettings, task_id: str, *, interval_s: float = 1.0) -> None:
        self._key = f"{_CANCEL}{task_id}".encode()
        self._interval_s = interval_s
        self._checked = 0.0
        self.requested = False
        self._consumer = Consumer(reader_config(kafka, group_id="_streams.replay.cancel"))
        tp = TopicPartition(REPLAY_LEDGER_TOPIC, 0)
        low, _end = self._consumer.get_watermark_offsets(tp, timeout=_TIMEOUT_S)
        # from the start: a cancel written while the task was interrupted counts too
        self._consumer.assign([TopicPartition(REPLAY_LEDGER_TOPIC, 0, low)])

    def check(self) -> bool:
        """True once a cancel for the task has been seen (reads at most once per interval)."""
        if self.requested or time.monotonic() - self._checked < self._interval_s:
            return self.requested
        self._checked = time.monotonic()
        for message in self._consumer.consume(500, timeout=0):
            if message.error() is None and message.key() == self._key:
                self.requested = True
        return self.requested

    def close(self) -> None:
        self._consumer.close()
