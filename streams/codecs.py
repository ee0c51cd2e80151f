"""How the values of a topic are encoded, declared with the pipeline and built at start-up.

A codec is a declaration (``avro(OrderPlaced, "orders/order_placed.v1.avsc")``); the runtime
turns it into a serde once it has a schema registry client, so a model that does not match its
schema stops the stage at start-up rather than at the first record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from streams.config import SchemaSettings

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from streams.serde import Serde

__all__ = ["Codec", "avro", "json", "raw", "registry_for", "schemas_dir", "text"]

Kind = Literal["bytes", "string", "json", "avro"]


def schemas_dir() -> Path:
    """The folder of .avsc files: $STREAMS_SCHEMAS_DIR, else ./schemas, else the checkout's."""
    return SchemaSettings().resolved_schemas_dir()


@dataclass(frozen=True)
class Codec:
    """The declared encoding of a topic's values (and the model they decode to)."""

    kind: Kind
    model: type[BaseModel] | None = None
    schema: str | None = None  # path of the .avsc file, relative to the schemas folder

    @property
    def needs_registry(self) -> bool:
        return self.kind == "avro"

    def build(self, registry: SchemaRegistryClient | None) -> Serde[object]:
        """The serde for this codec; raises SchemaError if the model and schema disagree."""
        from streams import serde  # noqa: PLC0415 - serde pulls in fastavro; load when needed

        built: object
        if self.kind == "bytes":
            built = serde.BytesSerde()
        elif self.kind == "string":
            built = serde.StringSerde()
        elif self.kind == "json":
            assert self.model is not None  # noqa: S101 - json() always sets it
            built = serde.JsonSerde(self.model)
        else:
            assert self.model is not None  # noqa: S101 - avro() always sets both
            assert self.schema is not None  # noqa: S101
            schema = serde.load_schema(schemas_dir() / self.schema)
            built = serde.AvroSerde(self.model, schema, registry)
        return built  # type: ignore[return-value]  # each serde is a Serde of its own type

    def describe(self) -> str:
        model = f"[{self.model.__name__}]" if self.model else ""
        schema = f" {self.schema}" if self.schema else ""
        return f"{self.kind}{model}{schema}"


def registry_for(codecs: Iterable[Codec], url: str) -> SchemaRegistryClient | None:
    """A schema registry client if any of ``codecs`` needs one (Avro), else None."""
    if not any(codec.needs_registry for codec in codecs):
        return None
    # the registry client (authlib, httpx) is loaded only for stages that need it
    from streams.serde.registry import registry_client  # noqa: PLC0415

    return registry_client(url)


def raw() -> Codec:
    """Values are bytes, untouched."""
    return Codec("bytes")


def text() -> Codec:
    """Values are UTF-8 text."""
    return Codec("string")


def json(model: type[BaseModel]) -> Codec:
    """Values are JSON documents validated by ``model``."""
    return Codec("json", model)


def avro(model: type[BaseModel], schema: str) -> Codec:
    """Values are Avro in the Confluent wire format; ``schema`` is a path under schemas/."""
    return Codec("avro", model, schema)
