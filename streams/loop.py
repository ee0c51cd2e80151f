"""The loop every worker runs, stage or sink: consume, hand the records to a batch, commit.

The loop owns what both kinds share: stop requests, the heartbeat the watchdog reads, the
consume budget (records that still fit in the batch, time left before it must commit), the
rebalance callbacks, consumer errors, the stats tick and the test limits. What a batch *is*
(a Kafka transaction for a stage, a database transaction for a sink) is the ``Batch``'s own.

A rebalance callback that had to drop the open batch sets ``Batch.rewind_pending``; the loop
then discards what the same consume() returned (it may lie beyond the rewind point) and calls
``rewind()`` outside any callback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from streams.config import StageSettings
from streams.exceptions import KafkaClientError
from streams.stats import ComponentStats

__all__ = ["Batch", "WorkerLoop"]

log = logging.getLogger("streams.loop")

# How long one consume() waits for records when no batch is open.
_POLL_S = 0.1


class Batch(Protocol):
    """The open unit of work of one worker kind, driven by ``WorkerLoop``."""

    rewind_pending: bool

    @property
    def stats(self) -> ComponentStats:
        """The worker's counters (the loop reads ``consumed`` for its test limit)."""
        ...

    def room(self) -> int:
        """Records that still fit in the open batch (the whole bound when none is open)."""
        ...

    def age_s(self) -> float | None:
        """Seconds since the open batch began; None when no batch is open."""
        ...

    def before_consume(self) -> None:
        """Work due before each consume() (delivery reports, retry partitions now due)."""
        ...

    def process(self, messages: list[Message]) -> None:
        """Handle records (none of them an error event) in the open batch."""
        ...

    def maybe_commit(self, *, force: bool) -> None:
        """Commit if the batch is full or old enough (always with ``force``)."""
        ...

    def rewind(self) -> None:
        """Drop the open batch; seek every assigned partition back to its committed offset."""
        ...

    def finish(self) -> None:
        """Stopping on request: commit what was processed."""
        ...

    def close(self) -> None:
        """The worker is ending (cleanly or not): drop whatever is still open, close clients."""
        ...

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None: ...

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None: ...

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None: ...


class WorkerLoop:
    """Runs one worker's consume loop over a ``Batch`` until stopped."""

    def __init__(self, settings: StageSettings) -> None:
        self.settings = settings
        self.heartbeat = time.monotonic()  # the loop's last turn; the worker's watchdog reads it
        self.joined = False  # the group gave this worker its first assignment (maybe empty)
        self._stop_requested = False

    def request_stop(self) -> None:
        """Finish the batch in flight, commit, and return from ``run`` (SIGTERM calls this)."""
        self._stop_requested = True

    def run(
        self,
        consumer: Consumer,
        batch: Batch,
        *,
        topics: list[str],
        emit_stats: Callable[[], None],
        max_records: int | None = None,
        idle_timeout_s: float | None = None,
        assignment: list[TopicPartition] | None = None,
    ) -> None:
        """Subscribe, then consume and process until ``request_stop`` (or the test limits).

        ``assignment`` instead of ``topics``: read exactly these partitions (``assign()``, no
        group membership, no rebalance); a replay task that owns its partitions alone does.
        """

        def on_assign(assigned: Consumer, partitions: list[TopicPartition]) -> None:
            self.joined = True
            batch.on_assign(assigned, partitions)

        if assignment is not None:
            consumer.assign(assignment)
            self.joined = True
        else:
            consumer.subscribe(
                topics, on_assign=on_assign, on_revoke=batch.on_revoke, on_lost=batch.on_lost
            )
        last_stats = last_record = time.monotonic()
        try:
            while not self._stop_requested:
                self.heartbeat = time.monotonic()
                batch.before_consume()
                messages = self._consume(consumer, batch)
                if messages:
                    last_record = time.monotonic()
                batch.process(messages)
                batch.maybe_commit(force=False)
                if batch.rewind_pending:
                    batch.rewind()
                if time.monotonic() - last_stats >= self.settings.stats_interval_s:
                    emit_stats()
                    last_stats = time.monotonic()
                if max_records is not None and batch.stats.consumed >= max_records:
                    break
                if idle_timeout_s is not None and time.monotonic() - last_record > idle_timeout_s:
                    break
            batch.finish()
        finally:
            batch.close()
            emit_stats()

    def _consume(self, consumer: Consumer, batch: Batch) -> list[Message]:
        count = max(1, min(self.settings.consume_max_records, batch.room()))
        timeout = _POLL_S
        age = batch.age_s()
        if age is not None:
            left = self.settings.batch_max_ms / 1000 - age
            timeout = max(0.0, min(timeout, left))
        messages = consumer.consume(num_messages=count, timeout=timeout)
        if batch.rewind_pending:
            # a rebalance callback dropped the batch inside consume(): what it returned may lie
            # beyond the rewind point and is read again after the seek
            batch.rewind()
            return []
        if not messages:
            return messages
        good = [message for message in messages if message.error() is None]
        if len(good) == len(messages):
            return good  # no error event: the common case, without a call per message
        for message in messages:
            _usable(message)  # skips end-of-partition events, logs errors, raises if fatal
        return good


def _usable(message: Any) -> bool:
    """True for a record; False for an event to skip. A fatal consumer error raises."""
    error = message.error()
    if error is None:
        return True
    if error.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001 - the public constant
        return False
    if error.fatal() or error.code() == KafkaError._FATAL:  # noqa: SLF001
        # the consumer is dead (a static member fenced after a broker restart, say): exit 1 so
        # that the supervisor starts a fresh one; nothing was committed
        raise KafkaClientError(
            f"consumer fatal error: {error.str()}",
            fatal=True,
            hint="the supervisor restarts the worker; if it repeats, check that each --slot "
            "runs once",
        )
    log.warning("consumer error (librdkafka retries): %s", error.str())
    return False
