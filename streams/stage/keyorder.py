"""Key-ordered retries in a running stage: the ledger kept in step with what is produced.

The rules are ``streams.ordering``'s; this module applies them to consumed messages: which key
and original offset a message has, whether it must be parked behind an earlier record of its
key, and how the ledger is rebuilt from the retry topics after an assignment or a rewind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaError, TopicPartition

from streams import headers
from streams.config import KafkaSettings
from streams.exceptions import KafkaClientError
from streams.kafka.clients import reader_config
from streams.kafka.messages import MessageLike, message_headers, origin_of
from streams.ordering import KeyOrderLedger, OrderKey, Waiting
from streams.stage.routing import Routed, park

__all__ = ["KeyOrdering", "order_of"]

log = logging.getLogger("streams.stage")

# How long a rebuild may take to read the retry topics from the committed offsets to the end.
_REBUILD_TIMEOUT_S = 60.0


def order_of(message: MessageLike) -> tuple[OrderKey, int] | None:
    """(original topic, partition, key) and original offset; None for a record without key."""
    key = message.key()
    if key is None:
        return None
    found = message_headers(message)
    if found:  # a record read back from a retry topic names where it entered
        original = headers.original_coordinates(found)
        if original is not None:
            topic, partition, offset = original
            return (topic, partition, bytes(key)), offset
    topic, partition, offset = origin_of(message)
    return (topic, partition, bytes(key)), offset


class KeyOrdering:
    """The ledger of one key-ordered stage worker and the decisions it drives."""

    def __init__(self, *, group_id: str, retry_topics: Iterable[str], kafka: KafkaSettings) -> None:
        self.ledger = KeyOrderLedger()
        self._group_id = group_id
        self._retry_topics = frozenset(retry_topics)
        self._kafka = kafka

    def parking_for(self, message: MessageLike) -> Routed | None:
        """The parked record for ``message`` if an earlier record of its key waits, else None.

        The ledger notes that ``message`` now waits too: the caller must produce the record.
        """
        if not self.ledger:
            return None  # nothing waits: the common case
        order = order_of(message)
        if order is None or self.ledger.is_head(*order):
            return None
        key, offset = order
        head = self.ledger.head(key)
        if head is None:  # is_head() said an earlier record waits
            return None
        parked = park(message, group_id=self._group_id, head=head, head_key=key)
        self.ledger.wait(key, Waiting(offset, head.topic, head.due_ms))
        return parked

    def settle(self, message: MessageLike, routed: Routed | None) -> Routed | None:
        """Note where ``message`` went (done: None or the DLQ; else a retry tier).

        Returns ``routed`` placed on the retry partition numbered like the key's input
        partition, so that the worker owning that input partition reads it (range assignor).
        """
        order = order_of(message)
        if order is None:
            return routed
        key, offset = order
        if routed is None or routed.to_dlq:
            self.ledger.done(key, offset)
            return routed
        assert routed.due_ms is not None  # noqa: S101 - not to_dlq
        self.ledger.wait(key, Waiting(offset, routed.topic, routed.due_ms))
        return routed.on_partition(key[1])

    def settle_if_retried(self, message: MessageLike) -> None:
        """A record processed successfully: only one read back from retry can have waited."""
        if message.topic() in self._retry_topics:
            self.settle(message, None)

    def drop_partitions(self, partitions: Iterable[TopicPartition]) -> None:
        self.ledger.drop_partitions({tp.partition for tp in partitions})

    def rebuild(self, starts: Iterable[TopicPartition]) -> None:
        """Refill the ledger from the retry topics: ``starts`` (committed offsets) to the end."""
        self.ledger.clear()
        retry = [tp for tp in starts if tp.topic in self._retry_topics]
        if not retry:
            return
        # never joined, never committed: a plain reader of the retry topics
        reader = Consumer(reader_config(self._kafka, group_id=f"{self._group_id}.ledger"))
        try:
            positions = [TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)) for tp in retry]
            remaining = set()
            for tp in positions:
                _low, high = reader.get_watermark_offsets(tp, timeout=30)
                if high > tp.offset:
                    remaining.add((tp.topic, tp.partition))
            reader.assign(positions)
            self._read_to_end(reader, remaining)
        finally:
            reader.close()
        log.info("key-ordered retries: %d records wait in retry topics", len(self.ledger))

    def _read_to_end(self, reader: Consumer, remaining: set[tuple[str, int]]) -> None:
        deadline = time.monotonic() + _REBUILD_TIMEOUT_S
        while remaining:
            if time.monotonic() > deadline:
                raise KafkaClientError(
                    f"stage {self._group_id}: could not read the retry topics to the end "
                    f"within {_REBUILD_TIMEOUT_S:.0f} s (left: {sorted(remaining)})",
                    hint="check the broker; the worker restarts and tries again",
                )
            for found in reader.consume(num_messages=500, timeout=1.0):
                where = (found.topic() or "", found.partition() or 0)
                error = found.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
                        remaining.discard(where)
                    continue
                order = order_of(found)
                due = headers.get_int(message_headers(found), headers.DUE_MS) or 0
                if order is not None:
                    self.ledger.wait(order[0], Waiting(order[1], where[0], due))
