"""Retry partitions held back until their head record is due: seek, pause, resume."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Consumer, TopicPartition

from streams.offsets import TP

__all__ = ["RetryGate"]


class RetryGate:
    """Holds back retry-topic partitions whose head record is not due yet.

    The partition is sought back to that record and paused; ``resume_due`` resumes it once due.
    The consumer keeps polling (heartbeats, other partitions): nothing sleeps.
    """

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer
        self._paused: dict[TP, int] = {}  # (topic, partition) -> due, epoch ms
        self._next_due = 0  # the earliest due time held: resume_due is a comparison till then

    def __contains__(self, tp: TP) -> bool:
        return tp in self._paused

    def hold(self, topic: str, partition: int, offset: int, due_ms: int) -> None:
        # seek before pause: librdkafka >= 1.9 keeps the seek position across pause/resume
        self._consumer.seek(TopicPartition(topic, partition, offset))
        self._consumer.pause([TopicPartition(topic, partition)])
        self._paused[(topic, partition)] = due_ms
        self._next_due = min(self._paused.values())

    def resume_due(self, now_ms: int) -> None:
        if not self._paused or now_ms < self._next_due:
            return  # asked every turn of the loop: nothing due is the common case
        due = [tp for tp, at in self._paused.items() if at <= now_ms]
        self._consumer.resume([TopicPartition(t, p) for t, p in due])
        for tp in due:
            del self._paused[tp]
        self._next_due = min(self._paused.values(), default=0)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions leaving this worker: resume them first (a pause would stick to them)."""
        leaving = [tp for tp in partitions if (tp.topic, tp.partition) in self._paused]
        if leaving:
            self._consumer.resume([TopicPartition(tp.topic, tp.partition) for tp in leaving])
            for tp in leaving:
                self._paused.pop((tp.topic, tp.partition), None)
            self._next_due = min(self._paused.values(), default=0)

    @property
    def held(self) -> int:
        return len(self._paused)
