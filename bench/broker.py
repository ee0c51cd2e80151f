"""Harness-side Kafka and schema-registry chores: topics, groups, input data, the schema.

Everything the harness creates carries the run id in its name, so ``sweep`` can remove what a
crashed run left behind. Nothing here touches topics, groups or subjects of other runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # NewTopic: documented, not in __all__
    AdminClient,
    NewTopic,
)
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

# Admin calls on a broker shared with other test runs can be slow; a minute is plenty.
ADMIN_TIMEOUT_S = 60.0


class Broker:
    """The AdminClient calls the harness needs."""

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self._admin = AdminClient({"bootstrap.servers": bootstrap_servers})

    def create_topics(self, names: Sequence[str], partitions: int) -> None:
        new = [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names]
        for future in self._admin.create_topics(new, operation_timeout=ADMIN_TIMEOUT_S).values():
            future.result(timeout=ADMIN_TIMEOUT_S)
        self._wait_for_metadata(names, partitions)

    def _wait_for_metadata(self, names: Sequence[str], partitions: int) -> None:
        deadline = time.monotonic() + ADMIN_TIMEOUT_S
        while True:
            topics = self._admin.list_topics(timeout=10).topics
            if all(n in topics and len(topics[n].partitions) == partitions for n in names):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {list(names)} did not appear in metadata")
            time.sleep(0.1)

    def topics_containing(self, text: str) -> list[str]:
        return sorted(t for t in self._admin.list_topics(timeout=10).topics if text in t)

    def delete_topics(self, names: Iterable[str]) -> list[str]:
        """Delete topics; return the error text of those that could not be deleted."""
        names = list(names)
        if not names:
            return []
        errors: list[str] = []
        futures = self._admin.delete_topics(names, operation_timeout=ADMIN_TIMEOUT_S)
        for name, future in futures.items():
            try:
                future.result(timeout=ADMIN_TIMEOUT_S)
            except KafkaException as exc:
                errors.append(f"{name}: {exc}")
        return errors

    def groups_containing(self, text: str) -> list[str]:
        listing = self._admin.list_consumer_groups(request_timeout=10).result(timeout=30)
        return sorted(g.group_id for g in listing.valid if text in g.group_id)

    def delete_groups(self, group_ids: Iterable[str]) -> list[str]:
        group_ids = list(group_ids)
        if not group_ids:
            return []
        errors: list[str] = []
        futures = self._admin.delete_consumer_groups(group_ids, request_timeout=30)
        for group_id, future in futures.items():
            try:
                future.result(timeout=ADMIN_TIMEOUT_S)
            except KafkaException as exc:
                errors.append(f"{group_id}: {exc}")
        return errors


def produce_input(
    bootstrap_servers: str, topic: str, records: Sequence[tuple[bytes, bytes]]
) -> None:
    """Produce the pre-built records once; every contender then reads the same input."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap_servers,
            "enable.idempotence": True,
            # Loading is not measured: batch generously so it is quick and does not disturb.
            "linger.ms": 50,
        }
    )
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(ADMIN_TIMEOUT_S) != 0:
        raise TimeoutError(f"could not deliver the input records to {topic}")


def count_records(bootstrap_servers: str, topic: str, partitions: int) -> int:
    """Sum of high watermarks (the input topic is written without transactions)."""
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": f"{topic}-count"})
    try:
        total = 0
        for partition in range(partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10, cached=False
            )
            total += high - low
        return total
    finally:
        consumer.close()


def read_through(bootstrap_servers: str, topic: str, partitions: int, expected: int) -> float:
    """Read the topic once from the beginning (page-cache warm-up); return seconds taken."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"{topic}-warmup",
            "enable.auto.commit": False,
        }
    )
    start = time.monotonic()
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        seen = 0
        deadline = start + ADMIN_TIMEOUT_S
        while seen < expected and time.monotonic() < deadline:
            seen += len(consumer.consume(1000, timeout=0.5))
    finally:
        consumer.close()
    return time.monotonic() - start


def register_schema(url: str, subject: str, schema_str: str) -> int:
    """Register the Avro schema in the real registry; return its Confluent schema id."""
    return int(
        SchemaRegistryClient({"url": url}).register_schema(subject, Schema(schema_str, "AVRO"))
    )


def delete_subject(url: str, subject: str) -> None:
    client = SchemaRegistryClient({"url": url})
    client.delete_subject(subject, permanent=False)
    client.delete_subject(subject, permanent=True)
