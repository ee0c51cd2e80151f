"""AvroSerde and `streams schemas check` against a real Confluent-compatible schema registry.

The registry is the one at STREAMS_SCHEMA_REGISTRY_URL (the session fixture sets it to the
cluster's), else the local stack's. Every test uses its own namespace, so its subjects are new
and reruns never collide; subjects are left behind (the local registry keeps them in memory).
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import struct
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from pydantic import BaseModel

from streams.exceptions import SerializationError
from streams.serde import (
    AvroSchema,
    AvroSerde,
    check_against_registry,
    load_schema,
    registry_client,
)

pytestmark = pytest.mark.integration

DEFAULT_REGISTRY_URL = "http://127.0.0.1:18081/apis/ccompat/v7"
STREAMS = str(Path(sys.executable).with_name("streams"))
TOPIC = "orders.placed"
EXIT_CHECK_FAILED = 3


class Status(enum.StrEnum):
    NEW = "NEW"
    PAID = "PAID"


class Address(BaseModel):
    city: str


class Order(BaseModel):
    order_id: str
    amount: float
    status: Status
    placed_at: dt.datetime
    address: Address | None = None
    note: str | None = None


class OrderV2(Order):
    channel: str = "web"


STATUS = {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID"]}
ADDRESS = {"type": "record", "name": "Address", "fields": [{"name": "city", "type": "string"}]}


def order_document(namespace: str, *extra_fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "record",
        "name": "OrderPlaced",
        "namespace": namespace,
        "fields": [
            {"name": "order_id", "type": "string"},
            {"name": "amount", "type": "double"},
            {"name": "status", "type": STATUS},
            {"name": "placed_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "address", "type": ["null", ADDRESS], "default": None},
            {"name": "note", "type": ["null", "string"], "default": None},
            *extra_fields,
        ],
    }


CHANNEL = {"name": "channel", "type": "string", "default": "web"}


def write_schema(root: Path, version: int, document: dict[str, Any]) -> AvroSchema:
    path = root / "orders" / f"order_placed.v{version}.avsc"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2))
    return load_schema(path)


def an_order() -> Order:
    return Order(
        order_id="o-1",
        amount=12.5,
        status=Status.PAID,
        placed_at=dt.datetime(2026, 11, 27, 9, 0, 0, 250000, tzinfo=dt.UTC),
        address=Address(city="Oslo"),
    )


@pytest.fixture(scope="module")
def registry_url() -> str:
    url = os.environ.get("STREAMS_SCHEMA_REGISTRY_URL", DEFAULT_REGISTRY_URL)
    probe = registry_client(url)
    try:
        probe.get_subjects()
    except Exception as error:  # noqa: BLE001 - any failure here means "no registry to test"
        pytest.fail(f"no schema registry at {url} ({error}); start one with `streams local up`")
    finally:
        probe.close()
    return url


@pytest.fixture
def new_client(registry_url: str) -> Iterator[Callable[[], SchemaRegistryClient]]:
    """Fresh registry clients (no shared cache, as in another process), closed after the test."""
    clients: list[SchemaRegistryClient] = []

    def make() -> SchemaRegistryClient:
        clients.append(registry_client(registry_url))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(new_client: Callable[[], SchemaRegistryClient]) -> SchemaRegistryClient:
    return new_client()


@pytest.fixture
def namespace() -> str:
    return f"streams_test_{uuid.uuid4().hex[:12]}.orders"


@pytest.fixture
def schemas_dir(tmp_path: Path) -> Path:
    return tmp_path / "schemas"


def test_the_schema_is_registered_once_at_start_up_and_then_never_asked_again(
    client: SchemaRegistryClient,
    namespace: str,
    schemas_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v1 = write_schema(schemas_dir, 1, order_document(namespace))

    serde = AvroSerde(Order, v1, client)

    latest = client.get_latest_version(v1.subject)
    assert v1.subject == f"{namespace}.OrderPlaced"
    assert serde.schema_id == latest.schema_id
    for name in ("register_schema", "lookup_schema", "get_schema", "get_latest_version"):
        monkeypatch.setattr(client, name, _forbidden(name))
    for _ in range(50):
        data = serde.serialize(an_order(), topic=TOPIC)
        assert serde.deserialize(data, topic=TOPIC) == an_order()
    assert data[:5] == struct.pack(">bI", 0, serde.schema_id)


def test_a_second_process_finds_the_registered_id_without_registering(
    new_client: Callable[[], SchemaRegistryClient], namespace: str, schemas_dir: Path
) -> None:
    v1 = write_schema(schemas_dir, 1, order_document(namespace))
    writer = AvroSerde(Order, v1, new_client())

    reader = AvroSerde(Order, v1, new_client(), auto_register=False)

    assert reader.schema_id == writer.schema_id
    assert reader.deserialize(writer.serialize(an_order(), topic=TOPIC), topic=TOPIC) == an_order()


def test_a_new_reader_resolves_the_old_writer_schema_by_id_and_fills_defaults(
    new_client: Callable[[], SchemaRegistryClient], namespace: str, schemas_dir: Path
) -> None:
    v1 = write_schema(schemas_dir, 1, order_document(namespace))
    v2 = write_schema(schemas_dir, 2, order_document(namespace, CHANNEL))
    old_writer = AvroSerde(Order, v1, new_client())
    data = old_writer.serialize(an_order(), topic=TOPIC)

    new_reader = AvroSerde(OrderV2, v2, new_client())  # a fresh client: nothing cached

    assert new_reader.schema_id != old_writer.schema_id
    decoded = new_reader.deserialize(data, topic=TOPIC)
    assert decoded == OrderV2(**an_order().model_dump(), channel="web")


def test_an_id_the_registry_does_not_know_is_a_serialization_error(
    client: SchemaRegistryClient, namespace: str, schemas_dir: Path
) -> None:
    serde = AvroSerde(Order, write_schema(schemas_dir, 1, order_document(namespace)), client)
    data = struct.pack(">bI", 0, 2**31 - 1) + serde.serialize(an_order(), topic=TOPIC)[5:]

    with pytest.raises(SerializationError, match=f"unknown writer schema id {2**31 - 1}") as raised:
        serde.deserialize(data, topic=TOPIC)
    assert raised.value.raw == data


def test_check_against_registry_follows_the_registry_verdict(
    client: SchemaRegistryClient, namespace: str, schemas_dir: Path
) -> None:
    v1 = write_schema(schemas_dir, 1, order_document(namespace))

    assert check_against_registry(client, v1, register=False) == []
    with pytest.raises(SchemaRegistryError):
        client.get_version(v1.subject, "latest")  # a dry run registers nothing

    assert check_against_registry(client, v1, register=True) == []
    assert client.get_version(v1.subject, "latest").version == 1
    client.set_compatibility(v1.subject, "BACKWARD")

    breaking = write_schema(
        schemas_dir, 2, order_document(namespace, {"name": "coupon", "type": "string"})
    )
    problems = check_against_registry(client, breaking, register=True)
    assert len(problems) == 1
    assert "not compatible with registry version 1" in problems[0]
    assert "coupon: added without a default" in problems[0]
    assert client.get_version(v1.subject, "latest").version == 1

    compatible = write_schema(schemas_dir, 2, order_document(namespace, CHANNEL))
    assert check_against_registry(client, compatible, register=True) == []
    assert client.get_version(v1.subject, "latest").version == 2


def test_streams_schemas_check_json_against_the_registry(
    registry_url: str, client: SchemaRegistryClient, namespace: str, schemas_dir: Path
) -> None:
    """The real command as a subprocess, registry URL from the environment, reading --json."""
    write_schema(schemas_dir, 1, order_document(namespace))
    subject = f"{namespace}.OrderPlaced"

    dry = _check(registry_url, schemas_dir)
    assert dry.returncode == 0, dry.stderr
    (report,) = json.loads(dry.stdout)["subjects"]
    assert report["subject"] == subject
    assert report["versions"] == [1]
    assert report["registry"]["state"] == "would-register"

    registered = _check(registry_url, schemas_dir, "--register")
    assert registered.returncode == 0, registered.stderr
    (report,) = json.loads(registered.stdout)["subjects"]
    assert report["registry"]["state"] == "registered"
    assert client.get_version(subject, "latest").schema_id == report["registry"]["schema_id"]

    again = _check(registry_url, schemas_dir)
    (report,) = json.loads(again.stdout)["subjects"]
    assert report["registry"]["state"] == "up-to-date"

    # someone registers a v2 by hand, then the files get a v2 of their own that conflicts
    client.set_compatibility(subject, "BACKWARD")
    by_hand = order_document(namespace, {"name": "channel", "type": "int", "default": 0})
    client.register_schema(subject, Schema(json.dumps(by_hand), "AVRO"))
    write_schema(schemas_dir, 2, order_document(namespace, CHANNEL))

    rejected = _check(registry_url, schemas_dir)
    assert rejected.returncode == EXIT_CHECK_FAILED, rejected.stderr
    output = json.loads(rejected.stdout)
    assert output["ok"] is False
    (report,) = output["subjects"]
    assert report["versions"] == [1, 2]
    assert report["problems"] == []
    assert report["registry"]["state"] == "incompatible"
    assert report["registry"]["registry_version"] == 2
    problem = report["registry"]["problems"][0]
    assert "v2: the registry says it is not compatible with registry version 2" in problem
    assert "channel: reader type: string not compatible with writer type: int" in problem


def _check(registry_url: str, schemas_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STREAMS_SCHEMA_REGISTRY_URL": registry_url}
    return subprocess.run(
        [STREAMS, "schemas", "check", "--json", "--schemas-dir", str(schemas_dir), *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def _forbidden(name: str) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        message = f"registry call {name} after start-up"
        raise AssertionError(message)

    return call
