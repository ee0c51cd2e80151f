"""What every worker kind does with a consumed message: decode it, read and carry its headers.

These helpers take anything shaped like ``confluent_kafka.Message`` (``MessageLike``), so the
test harness and the unit tests can hand them plain objects.
"""

from __future__ import annotations

from typing import Any, Protocol

from confluent_kafka import Message

from streams import headers
from streams.exceptions import SerializationError
from streams.record import Record
from streams.serde import Serde

__all__ = [
    "MessageLike",
    "Origin",
    "carried_headers",
    "decode_message",
    "message_headers",
    "origin_of",
]

# (topic, partition, offset) of a consumed message
Origin = tuple[str, int, int]


class MessageLike(Protocol):
    """The part of ``confluent_kafka.Message`` the workers read."""

    def topic(self) -> str | None: ...

    def partition(self) -> int | None: ...

    def offset(self) -> int | None: ...

    def key(self) -> bytes | None: ...

    def value(self) -> bytes | None: ...

    def headers(self) -> Any: ...

    def timestamp(self) -> tuple[int, int]: ...


def origin_of(message: MessageLike) -> Origin:
    """Where ``message`` was read: (topic, partition, offset)."""
    return (message.topic() or "", message.partition() or 0, message.offset() or 0)


def message_headers(message: MessageLike) -> tuple[tuple[str, bytes | None], ...]:
    """A message's headers as (name, bytes) pairs; a null header value stays None.

    Kafka tells a null header value from an empty one, and retry and DLQ records carry the
    headers over byte for byte, so the difference is kept (confluent-kafka's produce() writes
    None as null).
    """
    raw = message.headers()
    if not raw:
        return ()  # the common case, on the hot path
    if type(message) is Message:
        # the client's own list of (str, bytes | None) tuples already: copied, not converted
        # (a replay reads ten headers a record, and converting each was most of its cost)
        return tuple(raw)
    pairs = raw.items() if isinstance(raw, dict) else raw
    return tuple(
        (name, None if data is None else data.encode() if isinstance(data, str) else bytes(data))
        for name, data in pairs
    )


def decode_message(message: MessageLike, *, key: Serde[Any], value: Serde[Any]) -> Record[Any]:
    """A consumed message as a typed Record; a SerializationError names it and keeps its bytes."""
    # origin_of(), inline: this runs for every record
    topic, partition, offset = (
        message.topic() or "",
        message.partition() or 0,
        message.offset() or 0,
    )
    raw_value = message.value()
    raw_key = message.key()
    try:
        # the serdes reject a null value (a tombstone) with a SerializationError too
        decoded_value = value.deserialize(raw_value, topic=topic)
        decoded_key = None if raw_key is None else key.deserialize(bytes(raw_key), topic=topic)
    except SerializationError as error:
        raise type(error)(
            error.message,
            raw=None if raw_value is None else bytes(raw_value),
            topic=topic,
            partition=partition,
            offset=offset,
            hint=error.hint,
        ) from error
    return Record(
        value=decoded_value,
        key=decoded_key,
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp_ms=message.timestamp()[1],
        headers=message_headers(message),
    )


def carried_headers(
    message: MessageLike, original: headers.Headers | None = None
) -> headers.HeaderList:
    """What a record written to a retry topic or the DLQ carries over from ``message``.

    The record's own headers minus ours, plus ``streams.original.*``: kept from an earlier
    failure, or written now from the message's coordinates at its first failure.
    ``original`` is ``message_headers(message)`` when the caller has it already.
    """
    if original is None:
        original = message_headers(message)
    carried = headers.without_ours(original, keep_original=True)
    if headers.get(original, headers.ORIGINAL_TOPIC) is None:
        carried += [
            (headers.ORIGINAL_TOPIC, (message.topic() or "").encode()),
            (headers.ORIGINAL_PARTITION, str(message.partition()).encode()),
            (headers.ORIGINAL_OFFSET, str(message.offset()).encode()),
            (headers.ORIGINAL_TIMESTAMP, str(message.timestamp()[1]).encode()),
        ]
    return carried
