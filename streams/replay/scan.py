"""Read-only access to topics for the replay commands: partitions, watermarks, a range's records.

Nothing here commits, joins a group or writes: a dry run is made of these calls only. Ends are
last stable offsets (``read_committed``), so a range never includes records of a transaction
that may still abort; records of aborted transactions and transaction markers are skipped, and
counts are counts of records, not of offsets.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, Self

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from streams.config import KafkaSettings
from streams.exceptions import KafkaClientError, RefusedError
from streams.kafka.clients import reader_config
from streams.replay.selection import Ranges

__all__ = ["NO_PROGRESS", "Progress", "Reader"]

_TIMEOUT_S = 30.0
# A range read that gets no record and no end-of-partition for this long is stuck (the broker
# or the partition's leader is gone): it fails instead of hanging.
_STALL_S = 60.0


class Progress(Protocol):
    """Where long work reports how far it got (the CLI draws a bar with rate and ETA)."""

    def start(self, description: str, total: int | None, done: int = 0) -> None: ...

    def advance(self, count: int) -> None: ...

    def finish(self) -> None: ...


class _NoProgress:
    def start(self, description: str, total: int | None, done: int = 0) -> None:
        del description, total, done

    def advance(self, count: int) -> None:
        del count

    def finish(self) -> None:
        return


NO_PROGRESS: Progress = _NoProgress()


class Reader:
    """A read_committed consumer that never joins a group and never commits."""

    def __init__(self, kafka: KafkaSettings, *, purpose: str = "scan") -> None:
        self.kafka = kafka
        self.consumer = Consumer(
            {
                **reader_config(kafka, group_id=f"_streams.replay.{purpose}"),
                "fetch.queue.backoff.ms": 100,  # drains a range at full speed (see clients.py)
            }
        )

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def partitions(self, topic: str) -> int | None:
        """The topic's partition count; None when it does not exist."""
        try:
            metadata = self.consumer.list_topics(topic, timeout=_TIMEOUT_S)
        except KafkaException as error:
            raise KafkaClientError(
                f"cannot reach Kafka at {self.kafka.bootstrap_servers}: {error}",
                hint="check that the broker runs (`streams local status`) and "
                "STREAMS_BOOTSTRAP_SERVERS",
            ) from error
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            return None
        return len(found.partitions)

    def topic_id(self, topic: str) -> str | None:
        """The topic's id (a new one each time a topic of that name is created); None if the
        broker does not say (the topic is gone, or describing it is not allowed)."""
        admin = AdminClient(self.kafka.client_config())
        try:
            futures = admin.describe_topics(TopicCollection([topic]), request_timeout=_TIMEOUT_S)
            found = futures[topic].result(timeout=_TIMEOUT_S)
        except KafkaException:
            return None
        return str(found.topic_id) if found.topic_id is not None else None

    def require(self, topic: str, *, what: str, hint: str) -> int:
        """The partition count of a topic that must exist; a missing one is refused."""
        count = self.partitions(topic)
        if count is None:
            raise RefusedError(f"{what} {topic} does not exist", hint=hint)
        return count

    def watermarks(self, topic: str, partitions: int) -> Ranges:
        """partition -> (log start, last stable offset)."""
        found: Ranges = {}
        for p in range(partitions):
            low, high = self.consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=_TIMEOUT_S
            )
            found[p] = (low, high)
        return found

    def offsets_for_time(self, topic: str, ranges: Ranges, ms: int) -> dict[int, int]:
        """Per partition, the first offset whose timestamp is >= ``ms`` (its end if none)."""
        asked = [TopicPartition(topic, p, ms) for p in ranges]
        try:
            answered = self.consumer.offsets_for_times(asked, timeout=_TIMEOUT_S)
        except KafkaException as error:
            raise KafkaClientError(f"offsets_for_times on {topic} failed: {error}") from error
        return {
            tp.partition: tp.offset if tp.offset >= 0 else ranges[tp.partition][1]
            for tp in answered
        }

    def read_range(
        self,
        topic: str,
        ranges: Mapping[int, tuple[int, int]],
        on_record: Callable[[Message], None],
        *,
        progress: Progress = NO_PROGRESS,
        stop_partition: Callable[[Message], bool] | None = None,
    ) -> dict[int, int]:
        """Call ``on_record`` for every record in ``ranges``; returns where each one ended.

        ``stop_partition(message)`` True ends that message's partition at it (not passed on):
        the copy's "first record at or after --until". A partition also ends at a record at
        its end, at its end-of-partition, or when its position passed its end (markers).
        """
        walk = _Walk(topic, ranges, on_record, stop_partition)
        if not walk.pending:
            return walk.ends
        consumer = self.consumer
        consumer.assign([TopicPartition(topic, p, ranges[p][0]) for p in walk.pending])
        quiet_since = time.monotonic()
        try:
            while walk.pending:
                messages = consumer.consume(500, timeout=0.5)
                if messages:
                    quiet_since = time.monotonic()
                progress.advance(sum(walk.take(message) for message in messages))
                walk.pending -= _past_end(consumer, topic, walk.pending, walk.ends)
                if walk.pending and time.monotonic() - quiet_since > _STALL_S:
                    raise KafkaClientError(
                        f"reading {topic} stalled: nothing read for {_STALL_S:.0f} s "
                        f"(partitions {sorted(walk.pending)})",
                        hint="check the broker and the partitions' leaders",
                    )
        finally:
            consumer.unassign()
        return walk.ends


class _Walk:
    """The state of one range read: the partitions still open and where each one ends."""

    def __init__(
        self,
        topic: str,
        ranges: Mapping[int, tuple[int, int]],
        on_record: Callable[[Message], None],
        stop_partition: Callable[[Message], bool] | None,
    ) -> None:
        self.topic = topic
        self.ends = {p: end for p, (_start, end) in ranges.items()}
        self.pending = {p for p, (start, end) in ranges.items() if end > start}
        self._on_record = on_record
        self._stop = stop_partition

    def take(self, message: Message) -> int:
        """Handle one consumed message; 1 if it was passed on, else 0."""
        p = message.partition() or 0
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
                self.pending.discard(p)
            return 0
        offset = message.offset() or 0
        if p not in self.pending or offset >= self.ends[p]:
            self.pending.discard(p)
            return 0
        if self._stop is not None and self._stop(message):
            self.ends[p] = offset
            self.pending.discard(p)
            return 0
        self._on_record(message)
        if offset + 1 >= self.ends[p]:
            self.pending.discard(p)
        return 1


def _past_end(consumer: Any, topic: str, pending: set[int], ends: Mapping[int, int]) -> set[int]:
    """Partitions whose position reached their end (only transaction markers were left)."""
    if not pending:
        return set()
    positions = consumer.position([TopicPartition(topic, p) for p in pending])
    return {tp.partition for tp in positions if tp.offset >= ends[tp.partition]}
