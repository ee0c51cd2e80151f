"""Codec declarations and the serdes they build (Avro against confluent's mock registry)."""

from __future__ import annotations

import datetime as dt
import json as jsonlib
import uuid
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from pydantic import BaseModel

from streams import codecs
from streams.codecs import Codec, avro, json, raw, text
from streams.exceptions import SchemaError
from streams.serde import AvroSerde, BytesSerde, JsonSerde, StringSerde

TOPIC = "payments"
SCHEMA_FILE = "payments/payment_received.v1.avsc"
SCHEMA = {
    "type": "record",
    "name": "PaymentReceived",
    "namespace": "unit.payments",
    "fields": [
        {"name": "payment_id", "type": "string"},
        {"name": "amount_cents", "type": "long"},
        {"name": "received_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}


class PaymentReceived(BaseModel):
    payment_id: str
    amount_cents: int
    received_at: dt.datetime


class WrongPayment(BaseModel):
    payment_id: str
    amount_cents: str  # the schema says long
    received_at: dt.datetime


@pytest.fixture
def schemas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / SCHEMA_FILE
    path.parent.mkdir(parents=True)
    path.write_text(jsonlib.dumps(SCHEMA), encoding="utf-8")
    monkeypatch.setenv("STREAMS_SCHEMAS_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def registry() -> SchemaRegistryClient:
    return SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})


def payment() -> PaymentReceived:
    return PaymentReceived(
        payment_id="p-1",
        amount_cents=1299,
        received_at=dt.datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=dt.UTC),
    )


def test_declarations() -> None:
    assert raw() == Codec("bytes")
    assert text() == Codec("string")
    assert json(PaymentReceived) == Codec("json", PaymentReceived)
    assert avro(PaymentReceived, SCHEMA_FILE) == Codec("avro", PaymentReceived, SCHEMA_FILE)
    assert [c.needs_registry for c in (raw(), text(), json(PaymentReceived))] == [False] * 3
    assert avro(PaymentReceived, SCHEMA_FILE).needs_registry is True


def test_describe() -> None:
    assert raw().describe() == "bytes"
    assert json(PaymentReceived).describe() == "json[PaymentReceived]"
    assert avro(PaymentReceived, SCHEMA_FILE).describe() == (
        "avro[PaymentReceived] payments/payment_received.v1.avsc"
    )


def test_raw_builds_a_bytes_serde() -> None:
    serde: object = raw().build(None)

    assert isinstance(serde, BytesSerde)
    assert serde.serialize(b"\x00\x01", topic=TOPIC) == b"\x00\x01"


def test_text_builds_a_string_serde() -> None:
    serde: object = text().build(None)

    assert isinstance(serde, StringSerde)
    assert serde.deserialize("ø".encode(), topic=TOPIC) == "ø"


def test_json_builds_a_json_serde_of_the_model() -> None:
    serde: object = json(PaymentReceived).build(None)

    assert isinstance(serde, JsonSerde)
    assert serde.model is PaymentReceived
    data = serde.serialize(payment(), topic=TOPIC)
    assert jsonlib.loads(data)["amount_cents"] == 1299
    assert serde.deserialize(data, topic=TOPIC) == payment()


def test_avro_builds_a_registered_avro_serde(schemas: Path, registry: SchemaRegistryClient) -> None:
    serde: object = avro(PaymentReceived, SCHEMA_FILE).build(registry)

    assert isinstance(serde, AvroSerde)
    assert serde.schema.name == "unit.payments.PaymentReceived"
    assert serde.schema_id >= 1
    data = serde.serialize(payment(), topic=TOPIC)
    assert data[0] == 0
    assert int.from_bytes(data[1:5], "big") == serde.schema_id
    assert serde.deserialize(data, topic=TOPIC) == payment()
    registered = registry.get_latest_version("unit.payments.PaymentReceived")
    assert registered.schema_id == serde.schema_id


def test_avro_model_that_does_not_match_its_schema_fails_at_build(
    schemas: Path, registry: SchemaRegistryClient
) -> None:
    with pytest.raises(SchemaError, match="model WrongPayment does not match") as raised:
        avro(WrongPayment, SCHEMA_FILE).build(registry)

    assert "amount_cents" in raised.value.message


def test_avro_schema_file_missing_fails_at_build(
    schemas: Path, registry: SchemaRegistryClient
) -> None:
    with pytest.raises(SchemaError, match="cannot read"):
        avro(PaymentReceived, "payments/absent.v1.avsc").build(registry)


def test_schemas_dir_prefers_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMS_SCHEMAS_DIR", str(tmp_path / "elsewhere"))

    assert codecs.schemas_dir() == tmp_path / "elsewhere"


def test_schemas_dir_falls_back_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STREAMS_SCHEMAS_DIR", raising=False)
    (tmp_path / "schemas").mkdir()
    monkeypatch.chdir(tmp_path)

    assert codecs.schemas_dir() == tmp_path / "schemas"
