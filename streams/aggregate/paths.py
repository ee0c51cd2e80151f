"""Where an aggregate's records go when they are not folded: retry, DLQ, repartition topic.

Routed records go to the retry or DLQ partition numbered like the record's state partition, so
that the worker holding that state reads them back (the range assignor gives it partition
``p`` of every topic). Records of a re-keying stage are written to ``P.S.repartition`` under
their new key; what fails before that goes to the DLQ at once (a record read back from a
retry topic is always folded, never re-keyed).
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Message

from streams import headers
from streams.aggregate.emit import Emitter
from streams.aggregate.stats import AggregateStats
from streams.exceptions import DeadLetter, LateRecord
from streams.kafka.messages import carried_headers, message_headers, origin_of
from streams.offsets import TP, OffsetBook
from streams.record import Record
from streams.retry import RetryPolicy
from streams.spec import AggregateSpec
from streams.stage import routing
from streams.stage.gate import RetryGate
from streams.stage.serdes import StageSerdes
from streams.stage.writer import TransactionWriter, now_ms

__all__ = ["SidePaths"]

# Re-keying a record is never retried: a record read back from a retry topic is folded, so
# what fails before its re-keying goes to the DLQ at once.
_NO_RETRY = RetryPolicy(tiers=(), max_attempts=1)


class SidePaths:
    """Retry/DLQ routing, late records, re-keying, and the offset book's bookkeeping."""

    def __init__(
        self,
        *,
        spec: AggregateSpec,
        serdes: StageSerdes,
        writer: TransactionWriter,
        emitter: Emitter,
        book: OffsetBook,
        gate: RetryGate,
        stats: AggregateStats,
    ) -> None:
        self.spec = spec
        self._serdes = serdes
        self.writer = writer
        self._emitter = emitter
        self._book = book
        self._gate = gate
        self._stats = stats
        self._retry_topics = frozenset(spec.retry_topics)

    def hold_not_due(self, messages: list[Message]) -> list[Message]:
        """Drop retry records that are not due yet (and what follows them in their partition)."""
        if not self._retry_topics:
            return messages
        now = now_ms()
        held: set[TP] = set()
        ready = []
        for message in messages:
            tp = (message.topic() or "", message.partition() or 0)
            if tp in held:
                continue
            if tp[0] in self._retry_topics:
                due = headers.get_int(message_headers(message), headers.DUE_MS) or 0
                if due > now:
                    self._gate.hold(tp[0], tp[1], message.offset() or 0, due)
                    self._book.seeked.add(tp)
                    held.add(tp)
                    continue
            ready.append(message)
        return ready

    def repartition(self, message: Message, record: Record[Any]) -> None:
        """Write the record, keyed by ``spec.key(record)``, to ``P.S.repartition``."""
        topic = self.spec.repartition_topic or ""
        try:
            key = self._new_key(record, topic)
        except Exception as error:  # noqa: BLE001 - routed to the DLQ, never lost
            self.route(message, error, retry=False)
            return
        if not self.writer.open():
            return
        # streams.original.* name the input record: DLQ records and event time keep to it
        if self._emitter.produce(
            topic, message.value(), key, carried_headers(message), origin=origin_of(message)
        ):
            self.processed(message)

    def _new_key(self, record: Record[Any], topic: str) -> bytes:
        assert self.spec.key is not None  # noqa: S101 - only inputs of a re-keying stage
        key = self.spec.key(record)
        if key is None:
            raise DeadLetter("the key function returned None")
        return self._serdes.key.serialize(key, topic=topic)

    def route(self, message: Message, error: BaseException, *, retry: bool = True) -> None:
        routed = routing.route(
            message,
            error,
            group_id=self.spec.group_id,
            policy=self.spec.retry if retry else _NO_RETRY,
            now_ms=now_ms(),
        )
        self.send(message, routed)

    def late(self, message: Message) -> None:
        self._stats.late += 1
        if self.spec.late == "drop":
            if self.writer.open():
                self._stats.late_dropped += 1
                self.processed(message)
            return
        error = LateRecord("every window of the record had closed")
        routed = routing.route(
            message,
            error,
            group_id=self.spec.group_id,
            policy=self.spec.retry,
            now_ms=now_ms(),
            reason="late",
        )
        self.send(message, routed)

    def send(self, message: Message, routed: routing.Routed) -> None:
        """Produce a routed record on the partition numbered like the state partition."""
        if not self.writer.open():
            return
        routed = routed.on_partition(message.partition() or 0)
        if self.writer.send(message, routed) and routed.to_dlq:
            origin = origin_of(message)
            self.writer.dead_letters.add(routed.reason, f"{origin[0]}/{origin[1]}@{origin[2]}")

    def processed(self, message: Message) -> None:
        book = self._book
        book.next[(message.topic() or "", message.partition() or 0)] = (message.offset() or 0) + 1
        book.in_batch += 1
        self._stats.consumed += 1
