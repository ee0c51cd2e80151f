"""Client settings shared by every worker kind (stages and sinks)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import TopicPartition

from streams.config import KafkaSettings, StageSettings

__all__ = ["partition_names", "worker_consumer_config"]


def partition_names(partitions: Iterable[TopicPartition]) -> str:
    """``topic/partition, ...`` for logs; ``none`` for an empty list."""
    return ", ".join(f"{tp.topic}/{tp.partition}" for tp in partitions) or "none"


def worker_consumer_config(
    kafka: KafkaSettings, settings: StageSettings, *, group_id: str, slot: int
) -> dict[str, Any]:
    """The consumer of a worker: read_committed, no auto-commit, cooperative-sticky.

    Offsets are committed by the worker itself (through the transaction for a stage, with the
    rows for a sink), never by the client; a new group starts at the earliest record so that it
    never skips what is already there.
    """
    config: dict[str, Any] = {
        **kafka.client_config(),
        "group.id": group_id,
        "client.id": f"{group_id}.{slot}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(1000, settings.session_timeout_ms // 3),
        "max.poll.interval.ms": settings.max_poll_interval_ms,
        # librdkafka's default (1,000 ms) idles a worker that drains a backlog faster than the
        # fetcher refills its queue: the benchmark measured 0.15M vs 0.96M rec/s for a plain
        # consume-produce-commit loop at 1,000 vs 10 ms. 100 ms, as Quix Streams sets.
        "fetch.queue.backoff.ms": 100,
    }
    if settings.static_membership:
        config["group.instance.id"] = f"{group_id}.{slot}"
    config.update(kafka.kafka_extra)  # the escape hatch wins: raw librdkafka settings
    return config
