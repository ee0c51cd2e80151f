"""A sink's input records, built from consumed messages with few Python calls per message.

``record_maker(key, value)`` returns a function that turns one message into the same
``Record`` that ``streams.kafka.messages.decode_message`` builds, or None when that message
needs the general path (a null value, bytes a codec rejects, a codec raising): the caller then
calls ``decode_message``, which raises the ``SerializationError`` that names the record. So a
failure reads exactly as before, and only the common case is shortened:

- raw and text codecs are applied inline (``bytes`` as they are, ``bytes.decode()``);
  other codecs (JSON, Avro) are called as they are, one record at a time;
- a record without headers (the common case) skips the header conversion;
- the ``Record`` is filled through its slots rather than through the frozen dataclass's
  ``__init__`` (which calls ``object.__setattr__`` once per field from Python, about three
  times slower). ``Record``'s fields are checked when the maker is built; if they
  ever change, the maker falls back to the constructor.

A batch-shaped JSON decode (one pydantic ``TypeAdapter`` over the joined values) is not used:
values joined into one array can parse where a value alone does not (``1],[2``), which would
let a bad record through.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from streams.exceptions import SerializationError
from streams.headers import Headers
from streams.kafka.messages import MessageLike, message_headers
from streams.record import Record
from streams.serde import BytesSerde, Serde, StringSerde

__all__ = ["Kept", "KeptMessage", "MakeRecord", "record_maker"]

# What a batch keeps of each record it processed, to run the handler on it again when a later
# record of the batch fails: (topic, partition, offset, raw key, raw value, timestamp,
# headers). A tuple of bytes, str and int: the garbage collector stops tracking it at its first
# pass, whereas kept Records (or Messages) would be traversed by every later collection: at
# 5,000 records a batch, a large share of the sink's Python time per record.
Kept = tuple[str | None, int | None, int, bytes | None, bytes | None, int, Headers]


class KeptMessage:
    """A kept record read like a consumed message, so that ``record_maker`` rebuilds it."""

    __slots__ = ("_kept",)

    def __init__(self, kept: Kept) -> None:
        self._kept = kept

    def topic(self) -> str | None:
        return self._kept[0]

    def partition(self) -> int | None:
        return self._kept[1]

    def offset(self) -> int:
        return self._kept[2]

    def key(self) -> bytes | None:
        return self._kept[3]

    def value(self) -> bytes | None:
        return self._kept[4]

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return list(self._kept[6]) or None

    def timestamp(self) -> tuple[int, int]:
        return (0, self._kept[5])


MakeRecord = Callable[[MessageLike], "Record[Any] | None"]

# Record's fields in the order the slot setters below fill them.
_FIELDS = ("value", "key", "topic", "partition", "offset", "timestamp_ms", "headers")


def _fields_match() -> bool:
    return (
        tuple(f.name for f in dataclasses.fields(Record)) == _FIELDS
        and "__slots__" in Record.__dict__
        and "__init__" in Record.__dict__  # the dataclass's own: no __post_init__ to skip
        and not hasattr(Record, "__post_init__")
    )


def _record_builder() -> Callable[..., Record[Any]]:
    """``build(value, key, topic, partition, offset, timestamp_ms, headers)``, via the slots."""
    if not _fields_match():
        return Record
    new = object.__new__
    set_value, set_key, set_topic, set_partition, set_offset, set_timestamp, set_headers = (
        getattr(Record, name).__set__ for name in _FIELDS
    )

    def build(  # noqa: PLR0917 - Record's fields, positional on the hot path
        value: Any,
        key: Any,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int,
        headers: Any,
    ) -> Record[Any]:
        record: Record[Any] = new(Record)
        set_value(record, value)
        set_key(record, key)
        set_topic(record, topic)
        set_partition(record, partition)
        set_offset(record, offset)
        set_timestamp(record, timestamp_ms)
        set_headers(record, headers)
        return record

    return build


# what a decoder returns when the message needs the general path
_GENERAL: Any = object()


def _text(data: bytes | None, _topic: str) -> Any:
    if type(data) is not bytes:
        return _GENERAL
    try:
        return data.decode()
    except UnicodeDecodeError:
        return _GENERAL


def _decoder(serde: Serde[Any]) -> Callable[[bytes | None, str], Any]:
    """``decode(data, topic)``: the decoded value, or ``_GENERAL`` (null, rejected, not bytes)."""
    if type(serde) is StringSerde:
        return _text
    if type(serde) is BytesSerde:
        return lambda data, _topic: data if type(data) is bytes else _GENERAL
    deserialize = serde.deserialize

    def decode(data: bytes | None, topic: str) -> Any:
        if type(data) is not bytes:  # null, or a test's stand-in: decode_message decides
            return _GENERAL
        try:
            return deserialize(data, topic=topic)
        except SerializationError:
            return _GENERAL

    return decode


def record_maker(key: Serde[Any], value: Serde[Any]) -> MakeRecord:
    """A function from a message to its Record, or None where ``decode_message`` must decide."""
    build = _record_builder()
    value_raw = type(value) is BytesSerde  # inline below: no call at all for raw values
    decode_value = _decoder(value)
    decode_key = _decoder(key)

    def make(message: MessageLike) -> Record[Any] | None:
        topic = message.topic() or ""
        data = message.value()
        decoded = data if value_raw and type(data) is bytes else decode_value(data, topic)
        raw_key = message.key()
        decoded_key = None if raw_key is None else decode_key(raw_key, topic)
        if decoded is _GENERAL or decoded_key is _GENERAL:
            return None
        return build(
            decoded,
            decoded_key,
            topic,
            message.partition() or 0,
            message.offset() or 0,
            message.timestamp()[1],
            message_headers(message) if message.headers() else (),
        )

    return make
