"""The common record of a stage, handled without the general path's layers.

Most records of a running stage are read from an input topic, decoded, given to the handler,
which returns one value for the stage's one output topic (keeping the key), and written in the
open transaction. ``FastPath`` does exactly that in one loop: the decode, the encode, the size
check and the produce inline, the offset book updated in place, and no per-record callback
(delivery reports are attributed per transaction: ``Transaction.attributing``).

Anything else goes to the general path (``TransactionBatch.handle_one``), record by record,
in input order, with the same result it would have had there:

- a record from a retry topic (holds, reparks), or any record while something failed since the
  last commit (escalation, refusals);
- a record that does not decode, a handler that raises or returns anything but one value or
  one plain ``Output`` (no topic, key or headers of its own), an output that does not encode
  or is over its topic's limit, a produce the client refuses or a transaction that is not
  open: the general path does it again from the start (nothing of the record was written).

Used only by stages with plain retries (key-ordered stages park records by key, which the
general path does) and a synchronous handler with exactly one output topic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import Message

from streams.exceptions import SerializationError
from streams.kafka.limits import RECORD_OVERHEAD_BYTES
from streams.kafka.messages import message_headers
from streams.kafka.transaction import Transaction, TxnState
from streams.offsets import OffsetBook
from streams.record import KeepKey, Output, Record
from streams.serde import BytesSerde, StringSerde
from streams.spec import StageSpec
from streams.stage.serdes import StageSerdes, normalize_outputs
from streams.stage.writer import TransactionWriter
from streams.stats import StageStats

__all__ = ["FastPath"]

_OPEN = TxnState.OPEN


class FastPath:
    """The loop for the common record; everything else is handed to ``general``."""

    def __init__(
        self,
        *,
        spec: StageSpec,
        serdes: StageSerdes,
        writer: TransactionWriter,
        txn: Transaction,
        book: OffsetBook,
        stats: StageStats,
        general: Callable[[Message], None],
    ) -> None:
        topic = spec.default_output
        if topic is None or spec.is_async or spec.retry.key_ordered:
            raise ValueError("the fast path needs one output topic, plain retries, a sync handler")
        self._topic = topic
        self._handler = spec.handler
        self._value_in = serdes.input
        self._key_in = serdes.key
        self._value_out = serdes.outputs[topic]
        # raw and text keys: the key written is the key read, byte for byte (valid UTF-8
        # decodes and encodes back to the same bytes), so it is not encoded again
        self._keys_as_read = isinstance(serdes.key, BytesSerde | StringSerde)
        self._retry_topics = frozenset(spec.retry_topics)
        self._writer = writer
        self._guard = writer.guard
        self._txn = txn
        self._book = book
        self._stats = stats
        self._general = general

    @staticmethod
    def applies(spec: StageSpec) -> bool:
        return spec.default_output is not None and not spec.is_async and not spec.retry.key_ordered

    # one loop with its branches inlined on purpose: it runs for every record
    def run(self, messages: list[Message]) -> None:  # noqa: C901, PLR0912, PLR0915
        """Handle ``messages`` in order; stop early if the transaction was abandoned."""
        writer = self._writer
        guard = self._guard
        txn = self._txn
        book = self._book
        next_offsets = book.next
        stats = self._stats
        general = self._general
        retry_topics = self._retry_topics
        handler = self._handler
        value_in = self._value_in
        key_in = self._key_in
        value_out = self._value_out
        out_topic = self._topic
        keys_as_read = self._keys_as_read
        limit = guard.limit(out_topic)
        produce = txn.produce
        consumed = produced = 0
        try:
            for message in messages:
                topic = message.topic() or ""
                if topic in retry_topics or guard.failures or guard.rejections_seen:
                    general(message)
                    if writer.abandoned:
                        return
                    continue
                raw_value = message.value()
                raw_key = message.key()
                try:
                    value = value_in.deserialize(raw_value, topic=topic)
                    key = None if raw_key is None else key_in.deserialize(raw_key, topic=topic)
                except SerializationError:
                    general(message)  # decodes again, and routes it
                    if writer.abandoned:
                        return
                    continue
                partition = message.partition() or 0
                offset = message.offset() or 0
                headers = message.headers()
                record: Record[Any] = Record(
                    value,
                    key,
                    topic,
                    partition,
                    offset,
                    message.timestamp()[1],
                    # message_headers(), for records with headers only (rare on inputs)
                    () if not headers else message_headers(message),
                )
                try:
                    result = handler(record)
                except Exception as error:  # noqa: BLE001 - every handler failure is routed
                    writer.route(message, error)
                    if writer.abandoned:
                        return
                    continue
                if type(result) is Output:
                    plain = (
                        result.key is KeepKey
                        and not result.headers
                        and (result.topic is None or result.topic == out_topic)
                    )
                    out_value = result.value
                elif result is None or isinstance(result, list | tuple):
                    plain = False
                    out_value = None
                else:
                    plain = True
                    out_value = result
                if not plain or out_value is None or (txn.state is not _OPEN):
                    writer.write(message, record, normalize_outputs(result))
                    if writer.abandoned:
                        return
                    continue
                try:
                    value_bytes = value_out.serialize(out_value, topic=out_topic)
                    key_bytes = (
                        None
                        if key is None
                        else raw_key
                        if keys_as_read
                        else key_in.serialize(key, topic=out_topic)
                    )
                    # over the limit: the general path routes it as oversized
                    fits = RECORD_OVERHEAD_BYTES + len(key_bytes or b"") + len(value_bytes) <= limit
                    if fits:
                        produce(
                            out_topic,
                            value_bytes,
                            key_bytes,
                            None,
                            origin=(topic, partition, offset),
                        )
                except Exception:  # noqa: BLE001 - nothing of it was written: the general path
                    fits = False
                if not fits:
                    writer.write(message, record, normalize_outputs(result))
                    if writer.abandoned:
                        return
                    continue
                # the record is done: what OffsetBook.processed() does, inline
                next_offsets[(topic, partition)] = offset + 1
                book.in_batch += 1
                consumed += 1
                produced += 1
        finally:
            stats.consumed += consumed
            stats.produced += produced
