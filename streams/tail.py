"""Read the records of a topic, decoded when a codec is given: what `streams tail` runs.

A reader that ``assign()``s the topic's partitions and never joins a group or commits, so it
never moves any stage's offsets. ``read_committed`` by default: what a stage would read (records
of open or aborted transactions are not shown). Where it starts:

- ``Start.last(n)``: the last ``n`` records of the topic (from each partition's last ``n``
  offsets, merged in time order), like ``tail``;
- ``Start.beginning()``: every record still held;
- ``Start.at_offset(n)``: offset ``n`` of each partition read.

It stops at the end of every partition, or with ``follow`` waits for new records until
``stop()`` or until ``max_records`` were yielded.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from streams.codecs import Codec, registry_for
from streams.config import KafkaSettings
from streams.exceptions import KafkaClientError, SerializationError, UnknownTopicError
from streams.kafka.clients import reader_config
from streams.kafka.messages import message_headers

if TYPE_CHECKING:
    from streams.serde import Serde

__all__ = ["Start", "TailRecord", "tail"]

_REACH_TIMEOUT_S = 10
# One poll's wait: short enough that stop() and Ctrl-C are seen at once.
_POLL_S = 0.2
# The reader's group.id only satisfies the client: it never joins, never commits.
_GROUP = "streams-tail"


@dataclass(frozen=True)
class Start:
    """Where reading starts: the last ``count`` records, the beginning, or an offset."""

    kind: str
    count: int = 0

    @classmethod
    def last(cls, count: int) -> Start:
        return cls("last", count)

    @classmethod
    def beginning(cls) -> Start:
        return cls("beginning")

    @classmethod
    def at_offset(cls, offset: int) -> Start:
        return cls("offset", offset)


@dataclass(frozen=True)
class TailRecord:
    """One record as read, with its decoded key and value when a codec decoded them."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    decoded_key: Any = None
    decoded_value: Any = None
    # the codec's complaint when the value did not decode (the raw bytes are shown instead)
    decode_error: str | None = None

    @property
    def coordinates(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}"


class _Decoder:
    def __init__(self, codecs: tuple[Codec, Codec] | None, kafka: KafkaSettings) -> None:
        self._value: Serde[Any] | None = None
        self._key: Serde[Any] | None = None
        if codecs is not None:
            registry = registry_for(codecs, kafka.schema_registry_url)
            self._value, self._key = (codec.build(registry) for codec in codecs)

    def record(self, message: Message) -> TailRecord:
        topic = message.topic() or ""
        key, value = message.key(), message.value()
        decoded_key = decoded_value = error = None
        if self._value is not None and value is not None:
            try:
                decoded_value = self._value.deserialize(value, topic=topic)
            except SerializationError as failed:
                error = failed.message
        if self._key is not None and key is not None:
            try:
                decoded_key = self._key.deserialize(key, topic=topic)
            except SerializationError:
                decoded_key = None  # shown as bytes
        return TailRecord(
            topic=topic,
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            timestamp_ms=message.timestamp()[1],
            key=key,
            value=value,
            headers=message_headers(message),
            decoded_key=decoded_key,
            decoded_value=decoded_value,
            decode_error=error,
        )


# Over 50 lines: one reading loop whose phases (start offsets, read to the end, follow) share
# the consumer and the count of records left; split up they would pass those around.
def tail(
    topic: str,
    *,
    start: Start,
    follow: bool = False,
    max_records: int | None = None,
    partitions: list[int] | None = None,
    codecs: tuple[Codec, Codec] | None = None,
    read_committed: bool = True,
    kafka: KafkaSettings | None = None,
    stop: threading.Event | None = None,
) -> Iterator[TailRecord]:
    """Yield the records of ``topic`` (see the module docstring for where and until when).

    ``codecs``: (value, key) codecs that decode the records, e.g. ``Pipeline.codecs_of``; a
    record that does not decode is yielded with its bytes and ``decode_error``.
    """
    settings = kafka or KafkaSettings()
    config = reader_config(settings, group_id=_GROUP)
    if not read_committed:
        config["isolation.level"] = "read_uncommitted"
    consumer = Consumer(config)
    stopped = stop or threading.Event()
    left = -1 if max_records is None else max_records  # -1: no limit
    try:
        decoder = _Decoder(codecs, settings)
        chosen = _partitions(consumer, topic, partitions, settings)
        assignment = _assignment(consumer, topic, chosen, start)
        consumer.assign(assignment)
        pending = {tp.partition for tp in assignment}
        held: list[TailRecord] = []  # Start.last: sorted by time once every partition ended
        while pending and left != 0 and not stopped.is_set():
            message = consumer.poll(_POLL_S)
            if message is None or _at_end(message, pending):
                continue
            if start.kind == "last":
                held.append(decoder.record(message))
                continue
            yield decoder.record(message)
            left -= 1
        held.sort(key=lambda r: (r.timestamp_ms, r.partition, r.offset))
        for record in held[-start.count :] if held else []:
            if left == 0:
                return
            yield record
            left -= 1
        while follow and left != 0 and not stopped.is_set():
            message = consumer.poll(_POLL_S)
            if message is None or _at_end(message, set()):
                continue
            yield decoder.record(message)
            left -= 1
    finally:
        consumer.close()


def _at_end(message: Message, pending: set[int]) -> bool:
    """True for an end-of-partition event (the partition leaves ``pending``); raises on errors."""
    error = message.error()
    if error is None:
        return False
    if error.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001 - librdkafka's public code name
        pending.discard(message.partition() or 0)
        return True
    raise KafkaClientError(f"reading {message.topic()}: {error.str()}")


def _partitions(
    consumer: Consumer, topic: str, wanted: list[int] | None, kafka: KafkaSettings
) -> list[int]:
    try:
        metadata = consumer.list_topics(topic, timeout=_REACH_TIMEOUT_S).topics.get(topic)
    except KafkaException as error:
        raise KafkaClientError(
            f"cannot reach Kafka at {kafka.bootstrap_servers} (no answer in {_REACH_TIMEOUT_S} s)",
            hint=kafka.reach_hint,
        ) from error
    if metadata is None or metadata.error is not None:
        raise UnknownTopicError(f"no topic {topic} at {kafka.bootstrap_servers}")
    present = sorted(metadata.partitions)
    if wanted is None:
        return present
    unknown = [p for p in wanted if p not in present]
    if unknown:
        raise UnknownTopicError(
            f"topic {topic} has no partition {', '.join(map(str, unknown))} "
            f"(it has {len(present)})",
            hint=f"give --partition 0..{len(present) - 1}, or leave it out",
        )
    return wanted


def _assignment(
    consumer: Consumer, topic: str, partitions: list[int], start: Start
) -> list[TopicPartition]:
    if start.kind == "beginning":
        return [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
    if start.kind == "offset":
        return [TopicPartition(topic, p, start.count) for p in partitions]
    assignment = []
    for partition in partitions:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=_REACH_TIMEOUT_S
        )
        begin = max(low, high - start.count) if start.count else OFFSET_END
        assignment.append(TopicPartition(topic, partition, begin))
    return assignment
