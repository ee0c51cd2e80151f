"""The two workloads: what the input records are, and the per-record work of the "avro" copy.

Imported by the harness and by every contender process (both virtualenvs), so it needs only
fastavro, pydantic and confluent_kafka's schema registry client.
"""

from __future__ import annotations

import io
import json
import random
import uuid
from collections.abc import Callable
from typing import Any, Final

import fastavro
from pydantic import BaseModel

RAW_VALUE_BYTES: Final = 100
WIRE_MAGIC: Final = b"\x00"

ORDER_SCHEMA: Final[dict[str, Any]] = {
    "type": "record",
    "name": "Order",
    "namespace": "bench",
    "fields": [
        {"name": "seq", "type": "long"},
        {"name": "order_id", "type": "string"},
        {"name": "customer_id", "type": "long"},
        {"name": "sku", "type": "string"},
        {"name": "qty", "type": "int"},
        {"name": "price", "type": "double"},
        {"name": "currency", "type": "string"},
        {"name": "ts", "type": "long"},
        {"name": "status", "type": "string"},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "flags", "type": {"type": "array", "items": "string"}},
    ],
}
ORDER_SCHEMA_STR: Final = json.dumps(ORDER_SCHEMA)

_STATUSES: Final = ("NEW", "PAID", "PACKED", "SHIPPED", "DELIVERED", "CANCELLED")
_CURRENCIES: Final = ("EUR", "USD", "GBP", "CHF")
_FLAGS: Final = ("gift", "express", "fragile", "priority", "bulk", "return")
_NOTES: Final = (
    None,
    "leave the parcel at the reception desk and ring twice",
    "customer asked for a paper invoice sent to the billing address",
    "deliver after 18:00 on weekdays only, never on a Sunday",
    "call the customer before delivery: the door code changed",
)


class Order(BaseModel):
    """The pydantic model every "avro" contender validates and dumps once per record."""

    seq: int
    order_id: str
    customer_id: int
    sku: str
    qty: int
    price: float
    currency: str
    ts: int
    status: str
    note: str | None = None
    flags: list[str]


def keys(count: int) -> list[bytes]:
    """The small key set: ``count`` distinct keys."""
    return [f"key-{i:04d}".encode() for i in range(count)]


def build_raw(n: int, key_count: int, seed: int) -> list[tuple[bytes, bytes]]:
    """N (key, 100-byte value) pairs; the first 8 value bytes are the sequence number."""
    rng = random.Random(seed)
    key_set = keys(key_count)
    tail = RAW_VALUE_BYTES - 8
    return [(rng.choice(key_set), seq.to_bytes(8, "big") + rng.randbytes(tail)) for seq in range(n)]


def wire_header(schema_id: int) -> bytes:
    """Confluent wire format header: magic byte 0, then the schema id as 4 big-endian bytes."""
    return WIRE_MAGIC + schema_id.to_bytes(4, "big")


def build_avro(n: int, key_count: int, seed: int, schema_id: int) -> list[tuple[bytes, bytes]]:
    """N (key, Confluent-framed Avro Order) pairs of about 150 bytes each."""
    rng = random.Random(seed)
    key_set = keys(key_count)
    parsed = fastavro.parse_schema(ORDER_SCHEMA)
    header = wire_header(schema_id)
    out: list[tuple[bytes, bytes]] = []
    for seq in range(n):
        order = {
            "seq": seq,
            "order_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "customer_id": rng.randrange(1, 5_000_000),
            "sku": f"SKU-{rng.randrange(100_000):06d}",
            "qty": rng.randrange(1, 20),
            "price": round(rng.uniform(1, 500), 2),
            "currency": rng.choice(_CURRENCIES),
            "ts": 1_790_000_000_000 + seq,
            "status": rng.choice(_STATUSES),
            "note": rng.choice(_NOTES),
            "flags": rng.sample(_FLAGS, rng.randrange(1, 5)),
        }
        buf = io.BytesIO()
        buf.write(header)
        fastavro.schemaless_writer(buf, parsed, order)
        out.append((rng.choice(key_set), buf.getvalue()))
    return out


class AvroTranscoder:
    """deserialize -> ``Order.model_validate`` -> ``model_dump`` -> serialize, per record.

    The same object is used by every contender, so the per-record work is identical and any
    difference in throughput is framework (or client) overhead.
    """

    __slots__ = ("_header", "_parsed")

    def __init__(self, schema: dict[str, Any], schema_id: int) -> None:
        self._parsed = fastavro.parse_schema(schema)
        self._header = wire_header(schema_id)

    def __call__(self, value: bytes) -> bytes:
        if value[:5] != self._header:
            raise ValueError(f"not a Confluent-framed record of this schema: {value[:5]!r}")
        record = fastavro.schemaless_reader(io.BytesIO(value[5:]), self._parsed, None)
        order = Order.model_validate(record)
        buf = io.BytesIO()
        buf.write(self._header)
        fastavro.schemaless_writer(buf, self._parsed, order.model_dump())
        return buf.getvalue()


def value_function(
    workload: str, schema_registry_url: str, schema_id: int | None
) -> Callable[[bytes], bytes] | None:
    """The per-record value function of a workload: None for "raw" (copy the value unchanged).

    For "avro" the schema is fetched from the registry by id, as a Confluent deserializer would.
    """
    if workload == "raw":
        return None
    if workload == "avro":
        if schema_id is None:
            raise ValueError("the avro workload needs a schema id")
        from confluent_kafka.schema_registry import SchemaRegistryClient  # noqa: PLC0415

        registered = SchemaRegistryClient({"url": schema_registry_url}).get_schema(schema_id)
        if registered.schema_str is None:
            raise ValueError(f"schema {schema_id} has no schema text in the registry")
        return AvroTranscoder(json.loads(registered.schema_str), schema_id)
    raise ValueError(f"unknown workload {workload!r}")
