"""AvroSerde: round trips, the wire format, schema evolution, and every kind of bad bytes.

The registry here is confluent_kafka's in-process mock (``mock://``): no network.
"""

from __future__ import annotations

import datetime as dt
import io
import struct
import uuid
from decimal import Decimal
from typing import Annotated, Any, cast

import fastavro
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from pydantic import BaseModel, Field

from streams.exceptions import SchemaError, SerializationError
from streams.serde import AvroSerde, load_schema
from streams.serde.avro import UNREGISTERED_SCHEMA_ID
from streams.serde.schemas import parse_schema

from .models import (
    ORDER_V1,
    ORDER_V2,
    PAYMENT_V1,
    Address,
    Customer,
    OrderPlaced,
    OrderPlacedV2,
    OrderStatus,
    OrderStatusV2,
    PaymentReceived,
    order,
)

TOPIC = "orders.placed"


@pytest.fixture
def registry() -> SchemaRegistryClient:
    return SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})


@pytest.fixture
def serde() -> AvroSerde[OrderPlaced]:
    return AvroSerde(OrderPlaced, load_schema(ORDER_V1))


# --- round trips --------------------------------------------------------------------------------


def test_a_full_record_round_trips(serde: AvroSerde[OrderPlaced]) -> None:
    value = order()

    assert serde.deserialize(serde.serialize(value, topic=TOPIC), topic=TOPIC) == value


@pytest.mark.parametrize(
    "overrides",
    [
        {"note": None, "delivery_date": None},
        {"customer": Customer(name="Bo")},
        {"customer": Customer(name="Bo", email=None, address=Address(street="s", city="c"))},
        {"lines": [], "tags": {}},
        {"status": OrderStatus.SHIPPED},
        {"signature": b""},
        {"placed_at": dt.datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=dt.UTC)},
        {"priority": -(2**62), "total": -0.0},
    ],
    ids=[
        "optional-none",
        "nested-optional-none",
        "nested-optional-set",
        "empty-collections",
        "enum",
        "empty-bytes",
        "timestamp-before-epoch",
        "extreme-numbers",
    ],
)
def test_round_trips_keep_nested_optional_enum_and_timestamp_values(
    serde: AvroSerde[OrderPlaced], overrides: dict[str, Any]
) -> None:
    value = order(**overrides)

    assert serde.deserialize(serde.serialize(value, topic=TOPIC), topic=TOPIC) == value


def test_timestamps_come_back_as_utc_and_at_the_schema_precision(
    serde: AvroSerde[OrderPlaced],
) -> None:
    oslo = dt.timezone(dt.timedelta(hours=1))
    value = order(placed_at=dt.datetime(2026, 1, 1, 13, 0, 0, 123456, tzinfo=oslo))

    decoded = serde.deserialize(serde.serialize(value, topic=TOPIC), topic=TOPIC)

    assert decoded.placed_at == dt.datetime(2026, 1, 1, 12, 0, 0, 123000, tzinfo=dt.UTC)
    assert decoded.placed_at.tzinfo == dt.UTC


def test_timestamp_micros_keeps_microseconds() -> None:
    serde = AvroSerde(PaymentReceived, load_schema(PAYMENT_V1))
    value = PaymentReceived(
        payment_id="p-1",
        amount_cents=12_999,
        received_at=dt.datetime(2026, 11, 27, 8, 0, 0, 654321, tzinfo=dt.UTC),
    )

    assert serde.deserialize(serde.serialize(value, topic=TOPIC), topic=TOPIC) == value


def test_a_plain_enum_is_written_by_value() -> None:
    serde = AvroSerde(OrderPlacedV2, load_schema(ORDER_V2))
    value = OrderPlacedV2(**order().model_dump(exclude={"status"}), status=OrderStatusV2.CANCELLED)

    decoded = serde.deserialize(serde.serialize(value, topic=TOPIC), topic=TOPIC)

    assert decoded.status is OrderStatusV2.CANCELLED
    assert decoded == value


def test_the_body_is_plain_avro_after_a_five_byte_header(serde: AvroSerde[OrderPlaced]) -> None:
    value = order()
    data = serde.serialize(value, topic=TOPIC)

    assert data[0] == 0
    assert struct.unpack(">I", data[1:5]) == (UNREGISTERED_SCHEMA_ID,)
    body: Any = fastavro.schemaless_reader(
        io.BytesIO(data[5:]), fastavro.parse_schema(load_schema(ORDER_V1).parsed), None
    )
    assert body["status"] == "PAID"
    assert body["customer"]["address"] == {"street": "1 Main St", "city": "Oslo"}


# --- the registry -------------------------------------------------------------------------------


def test_the_schema_is_registered_at_construction_and_its_id_is_written(
    registry: SchemaRegistryClient,
) -> None:
    schema = load_schema(ORDER_V1)

    serde = AvroSerde(OrderPlaced, schema, registry)

    registered = registry.get_latest_version("tests.orders.OrderPlaced")
    assert serde.schema_id == registered.schema_id
    assert serde.serialize(order(), topic=TOPIC)[:5] == struct.pack(">bI", 0, serde.schema_id)


def test_without_auto_register_an_unregistered_schema_fails_at_start_up(
    registry: SchemaRegistryClient,
) -> None:
    with pytest.raises(SchemaError, match="is not registered under subject") as raised:
        AvroSerde(OrderPlaced, load_schema(ORDER_V1), registry, auto_register=False)
    assert "--register" in raised.value.hint


def test_without_auto_register_a_registered_schema_is_looked_up(
    registry: SchemaRegistryClient,
) -> None:
    writer = AvroSerde(OrderPlaced, load_schema(ORDER_V1), registry)

    reader = AvroSerde(OrderPlaced, load_schema(ORDER_V1), registry, auto_register=False)

    assert reader.schema_id == writer.schema_id


def test_a_model_that_does_not_match_fails_at_construction_before_any_registry_call(
    registry: SchemaRegistryClient,
) -> None:
    with pytest.raises(SchemaError, match="2 difference"):
        AvroSerde(OrderPlaced, load_schema(ORDER_V2), registry)

    assert registry.get_subjects() == []


def test_a_new_reader_reads_old_records_and_fills_defaults(
    registry: SchemaRegistryClient,
) -> None:
    old_writer = AvroSerde(OrderPlaced, load_schema(ORDER_V1), registry)
    new_reader = AvroSerde(OrderPlacedV2, load_schema(ORDER_V2), registry)
    assert old_writer.schema_id != new_reader.schema_id

    decoded = new_reader.deserialize(old_writer.serialize(order(), topic=TOPIC), topic=TOPIC)

    assert decoded.channel == "web"
    assert decoded.status is OrderStatusV2.PAID
    assert decoded.customer == order().customer


def test_an_old_reader_cannot_read_a_symbol_it_does_not_know(
    registry: SchemaRegistryClient,
) -> None:
    old_reader = AvroSerde(OrderPlaced, load_schema(ORDER_V1), registry)
    new_writer = AvroSerde(OrderPlacedV2, load_schema(ORDER_V2), registry)
    value = OrderPlacedV2(**order().model_dump(exclude={"status"}), status=OrderStatusV2.CANCELLED)
    data = new_writer.serialize(value, topic=TOPIC)

    with pytest.raises(
        SerializationError, match=r"cannot be read as tests\.orders\.OrderPlaced v1"
    ):
        old_reader.deserialize(data, topic=TOPIC)


def test_writer_schemas_are_fetched_once_per_id(
    registry: SchemaRegistryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_writer = AvroSerde(OrderPlaced, load_schema(ORDER_V1), registry)
    new_reader = AvroSerde(OrderPlacedV2, load_schema(ORDER_V2), registry)
    calls: list[int] = []
    fetch = registry.get_schema

    def counting_get_schema(schema_id: int, *args: Any, **kwargs: Any) -> Any:
        calls.append(schema_id)
        return fetch(schema_id, *args, **kwargs)

    monkeypatch.setattr(registry, "get_schema", counting_get_schema)
    old_data = old_writer.serialize(order(), topic=TOPIC)
    new_value = OrderPlacedV2(**order().model_dump(exclude={"status"}), status=OrderStatusV2.NEW)
    new_data = new_reader.serialize(new_value, topic=TOPIC)

    for _ in range(3):
        new_reader.deserialize(old_data, topic=TOPIC)
        new_reader.deserialize(new_data, topic=TOPIC)

    assert calls == [old_writer.schema_id]


def test_an_unknown_schema_id_is_a_serialization_error(registry: SchemaRegistryClient) -> None:
    serde = AvroSerde(OrderPlaced, load_schema(ORDER_V1), registry)
    data = struct.pack(">bI", 0, 4242) + serde.serialize(order(), topic=TOPIC)[5:]

    for _ in range(2):  # the second time from the negative cache
        with pytest.raises(SerializationError, match="unknown writer schema id 4242") as raised:
            serde.deserialize(data, topic=TOPIC)
        assert raised.value.raw == data


# --- bad bytes ----------------------------------------------------------------------------------


def _valid() -> bytes:
    return AvroSerde(OrderPlaced, load_schema(ORDER_V1)).serialize(order(), topic=TOPIC)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", r"is 0 byte\(s\); Confluent-framed Avro needs at least 5"),
        (b"\x00\x00\x00", r"is 3 byte\(s\)"),
        (b"\x01" + _valid()[1:], "starts with byte 0x01, not the magic byte 0x00"),
        (b'{"order_id": 1}', "starts with byte 0x7b, not the magic byte 0x00"),
        (_valid()[:-3], "cannot decode the Avro body .* EOFError"),
        (_valid()[:5], "cannot decode the Avro body"),
        (_valid() + b"\x00\x00", r"2 byte\(s\) left after decoding"),
        (struct.pack(">bI", 0, 7) + _valid()[5:], "writer schema id 7, but this serde has no"),
    ],
    ids=[
        "empty",
        "short-header",
        "wrong-magic",
        "json-not-avro",
        "truncated-body",
        "header-only",
        "trailing-bytes",
        "id-without-registry",
    ],
)
def test_bad_bytes_raise_a_serialization_error_with_the_raw_bytes(
    serde: AvroSerde[OrderPlaced], data: bytes, expected: str
) -> None:
    with pytest.raises(SerializationError, match=expected) as raised:
        serde.deserialize(data, topic=TOPIC)

    assert raised.value.raw == data
    assert raised.value.topic == TOPIC


def test_a_null_value_is_a_serialization_error(serde: AvroSerde[OrderPlaced]) -> None:
    with pytest.raises(SerializationError, match="is null") as raised:
        serde.deserialize(None, topic=TOPIC)

    assert raised.value.raw is None
    assert raised.value.topic == TOPIC


def test_a_decoded_record_that_fails_validation_is_a_serialization_error() -> None:
    class Score(BaseModel):
        points: Annotated[int, Field(ge=0)]

    schema = parse_schema(
        '{"type": "record", "name": "Score", "fields": [{"name": "points", "type": "int"}]}'
    )
    serde = AvroSerde(Score, schema)
    buffer = io.BytesIO()
    buffer.write(struct.pack(">bI", 0, 0))
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema.parsed), {"points": -5})
    data = buffer.getvalue()

    with pytest.raises(
        SerializationError,
        match="not a valid Score: points: Input should be greater than or equal to 0",
    ) as raised:
        serde.deserialize(data, topic=TOPIC)
    assert raised.value.raw == data


# --- serialization failures ---------------------------------------------------------------------


def test_serializing_another_type_is_a_serialization_error(
    serde: AvroSerde[OrderPlaced],
) -> None:
    with pytest.raises(
        SerializationError, match=r"expected a OrderPlaced for topic orders\.placed, got dict"
    ):
        serde.serialize(cast("Any", order().model_dump()), topic=TOPIC)


def test_a_value_the_schema_cannot_hold_is_a_serialization_error(
    serde: AvroSerde[OrderPlaced],
) -> None:
    value = order()
    value.lines[0].unit_price = Decimal("1.234")  # scale 3 in a decimal(10, 2)

    with pytest.raises(SerializationError, match="cannot encode OrderPlaced") as raised:
        serde.serialize(value, topic=TOPIC)
    assert raised.value.topic == TOPIC
