"""Serializers and deserializers for record keys and values, and the schemas behind them.

Every serde has ``serialize(value, *, topic) -> bytes`` and ``deserialize(data, *, topic)``.
Every failure raises ``streams.exceptions.SerializationError`` carrying the raw bytes and the
topic, so that a stage can route the record to its dead-letter topic; nothing else escapes.

- ``BytesSerde`` / ``StringSerde``: raw bytes, UTF-8 text.
- ``JsonSerde(Model)``: pydantic model as JSON.
- ``AvroSerde(Model, schema, registry)``: pydantic model as Avro in the Confluent wire format;
  the model is checked against the schema at construction (``check_binding``).
- ``load_schema`` / ``discover_schemas``: read ``schemas/<domain>/<record>.v<N>.avsc`` files.
- ``check_backward_compatible`` / ``check_against_registry`` / ``check_schema_dir``: what
  ``streams schemas check`` runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from streams.exceptions import SerializationError

if TYPE_CHECKING:
    from streams.serde.avro import AvroSerde
    from streams.serde.binding import check_binding
    from streams.serde.json import JsonSerde
    from streams.serde.registry import (
        SchemaCheckReport,
        check_against_registry,
        check_schema_dir,
        registry_client,
    )
    from streams.serde.schemas import (
        AvroSchema,
        check_backward_compatible,
        discover_schemas,
        load_schema,
        parse_schema,
    )

# Loaded on first use: the Avro and schema modules pull in fastavro and the registry client
# (authlib, httpx: about 9 MiB and 160 ms), which a stage of raw or JSON records never needs.
_LAZY = {
    "AvroSerde": "streams.serde.avro",
    "check_binding": "streams.serde.binding",
    "JsonSerde": "streams.serde.json",
    **dict.fromkeys(
        (
            "AvroSchema",
            "check_backward_compatible",
            "discover_schemas",
            "load_schema",
            "parse_schema",
        ),
        "streams.serde.schemas",
    ),
    **dict.fromkeys(
        ("SchemaCheckReport", "check_against_registry", "check_schema_dir", "registry_client"),
        "streams.serde.registry",
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AvroSchema",
    "AvroSerde",
    "BytesSerde",
    "JsonSerde",
    "SchemaCheckReport",
    "Serde",
    "StringSerde",
    "check_against_registry",
    "check_backward_compatible",
    "check_binding",
    "check_schema_dir",
    "discover_schemas",
    "load_schema",
    "parse_schema",
    "registry_client",
]

T = TypeVar("T")


class Serde(Protocol[T]):
    """Turns values of type T into record bytes and back; failures raise SerializationError."""

    def serialize(self, value: T, *, topic: str) -> bytes: ...

    def deserialize(self, data: bytes | None, *, topic: str) -> T: ...


class BytesSerde:
    """Bytes as they are. Fails only on a null value (a tombstone) or a value that is not bytes."""

    def serialize(self, value: bytes | bytearray | memoryview, *, topic: str) -> bytes:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise SerializationError(
                f"expected bytes for topic {topic}, got {type(value).__name__}", topic=topic
            )
        return bytes(value)

    def deserialize(self, data: bytes | None, *, topic: str) -> bytes:
        if data is None:
            raise SerializationError(
                f"record value on topic {topic} is null (a tombstone?)", topic=topic
            )
        return bytes(data)


class StringSerde:
    """UTF-8 text. Invalid UTF-8 and null values raise SerializationError with the raw bytes."""

    def serialize(self, value: str, *, topic: str) -> bytes:
        if not isinstance(value, str):
            raise SerializationError(
                f"expected str for topic {topic}, got {type(value).__name__}", topic=topic
            )
        try:
            return value.encode()
        except UnicodeEncodeError as error:
            raise SerializationError(
                f"cannot encode text as UTF-8 for topic {topic}: {error}", topic=topic
            ) from error

    def deserialize(self, data: bytes | None, *, topic: str) -> str:
        if data is None:
            raise SerializationError(
                f"record value on topic {topic} is null (a tombstone?)", topic=topic
            )
        try:
            return bytes(data).decode()
        except UnicodeDecodeError as error:
            raise SerializationError(
                f"record value on topic {topic} is not valid UTF-8: {error}",
                raw=bytes(data),
                topic=topic,
            ) from error
