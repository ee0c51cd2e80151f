"""Smoke tests of the foundation against the real broker and registry."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from tests.integration.conftest import Cluster, TopicFactory

pytestmark = pytest.mark.integration


def _key(message: Message) -> bytes:
    key = message.key()
    assert isinstance(key, bytes)
    return key


def _value(message: Message) -> bytes:
    value = message.value()
    assert isinstance(value, bytes)
    return value


def _read_all(
    cluster: Cluster, topic: str, *, isolation: str, expect: int, partitions: int = 1
) -> list[Message]:
    consumer = Consumer(
        cluster.client_config(
            **{
                "group.id": f"smoke-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": isolation,
            }
        )
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    messages: list[Message] = []
    idle = 0
    while idle < 5 and len(messages) < expect + 100:
        batch = consumer.consume(num_messages=500, timeout=1.0)
        if not batch:
            idle += 1
            if len(messages) >= expect:
                break
            continue
        idle = 0
        for message in batch:
            assert message.error() is None, message.error()
            messages.append(message)
    consumer.close()
    return messages


def test_round_trip_keeps_keys_values_and_headers(
    cluster: Cluster, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(partitions=3)
    producer = Producer(cluster.client_config(**{"enable.idempotence": True}))
    sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(300)}
    for key, value in sent.items():
        producer.produce(topic, value, key=key, headers=[("trace", key + b"-h"), ("n", b"1")])
    assert producer.flush(30) == 0

    received = _read_all(cluster, topic, isolation="read_committed", expect=300, partitions=3)
    assert {m.key(): m.value() for m in received} == sent
    for message in received:
        assert message.headers() == [("trace", _key(message) + b"-h"), ("n", b"1")]
    # one key always lands on one partition: per-key order is per-partition order
    by_key: dict[bytes, set[int | None]] = {}
    for message in received:
        by_key.setdefault(_key(message), set()).add(message.partition())
    assert all(len(parts) == 1 for parts in by_key.values())


def test_read_committed_sees_committed_and_never_aborted_records(
    cluster: Cluster, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(partitions=2)
    producer = Producer(cluster.client_config(**{"transactional.id": f"smoke-{uuid.uuid4().hex}"}))
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(100):
        producer.produce(topic, f"committed-{i}".encode(), key=str(i).encode())
    producer.commit_transaction(30)
    producer.begin_transaction()
    for i in range(100):
        producer.produce(topic, f"aborted-{i}".encode(), key=str(i).encode())
    producer.flush(30)  # the aborted records really reach the log before the abort
    producer.abort_transaction(30)
    producer.begin_transaction()
    for i in range(50):
        producer.produce(topic, f"after-{i}".encode(), key=str(i).encode())
    producer.commit_transaction(30)

    committed = _read_all(cluster, topic, isolation="read_committed", expect=150, partitions=2)
    values = sorted(_value(m).decode() for m in committed)
    assert len(values) == 150
    assert not [v for v in values if v.startswith("aborted-")]
    assert {v.split("-")[0] for v in values} == {"committed", "after"}

    # the aborted records are in the log: a read_uncommitted reader sees them, which shows the
    # filtering above is the broker's isolation and not records that were never written
    uncommitted = _read_all(cluster, topic, isolation="read_uncommitted", expect=250, partitions=2)
    assert len([m for m in uncommitted if _value(m).startswith(b"aborted-")]) == 100


def test_schema_registered_and_fetched_through_the_confluent_client(cluster: Cluster) -> None:
    with SchemaRegistryClient({"url": cluster.schema_registry_url}) as client:
        _register_and_fetch(client)


def _register_and_fetch(client: SchemaRegistryClient) -> None:
    namespace = f"smoke{uuid.uuid4().hex[:8]}"
    schema_text = json.dumps(
        {
            "type": "record",
            "name": "Ping",
            "namespace": namespace,
            "fields": [{"name": "id", "type": "long"}, {"name": "note", "type": "string"}],
        }
    )
    subject = f"{namespace}.Ping-value"
    schema_id = client.register_schema(subject, Schema(schema_text, "AVRO"))
    assert schema_id > 0
    fetched = client.get_schema(schema_id)
    assert fetched.schema_str is not None
    assert json.loads(fetched.schema_str) == json.loads(schema_text)
    latest = client.get_latest_version(subject)
    assert latest.schema_id == schema_id
    assert latest.version == 1
    assert subject in client.get_subjects()


def test_local_status_json_from_a_subprocess(cluster: Cluster) -> None:
    env = cluster.local_command_env()
    streams = Path(sys.executable).with_name("streams")
    done = subprocess.run(
        [str(streams), "local", "status", "--json"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["bootstrap_servers"] == cluster.bootstrap_servers
    assert status["schema_registry_url"] == cluster.schema_registry_url
    for component in ("kafka", "schema_registry"):
        assert status[component]["running"] is True
        assert isinstance(status[component]["pid"], int)
        assert Path(f"/proc/{status[component]['pid']}").exists()
