"""Client settings for every client the workers and tools create, in one place."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import TopicPartition

from streams.config import KafkaSettings, StageSettings
from streams.kafka.limits import RECORD_OVERHEAD_BYTES, TopicLimits

__all__ = [
    "partition_names",
    "reader_config",
    "transactional_producer_config",
    "worker_consumer_config",
]

# Room on top of the largest record a stage writes (record_size() is an estimate).
HEADER_ROOM_BYTES = 65536
# Batches of up to 256 KiB: larger ones did not raise a stage's throughput.
_BATCH_BYTES = 262144


def partition_names(partitions: Iterable[TopicPartition]) -> str:
    """``topic/partition, ...`` for logs; ``none`` for an empty list."""
    return ", ".join(f"{tp.topic}/{tp.partition}" for tp in partitions) or "none"


def worker_consumer_config(
    kafka: KafkaSettings,
    settings: StageSettings,
    *,
    group_id: str,
    client_id: str,
    incarnation: str | None = None,
    assignor: str = "cooperative-sticky",
) -> dict[str, Any]:
    """The consumer of a worker: read_committed, no auto-commit, ``assignor``.

    ``incarnation`` (one per worker process) is appended to the client.id as
    ``<client_id>#<incarnation>``: the group's description then tells this process's
    memberships from another process's on the same slot. The static ``group.instance.id``
    stays ``client_id``.

    Offsets are committed by the worker itself (through the transaction for a stage, with the
    rows for a sink), never by the client; a new group starts at the earliest record so that it
    never skips what is already there.
    """
    config: dict[str, Any] = {
        **kafka.client_config(),
        "group.id": group_id,
        "client.id": client_id if incarnation is None else f"{client_id}#{incarnation}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": assignor,
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(1000, settings.session_timeout_ms // 3),
        "max.poll.interval.ms": settings.max_poll_interval_ms,
        # librdkafka's default (1,000 ms) idles a worker that drains a backlog faster than the
        # fetcher refills its queue: the benchmark measured 0.15M vs 0.96M rec/s for a plain
        # consume-produce-commit loop at 1,000 vs 10 ms. 100 ms, as Quix Streams sets.
        "fetch.queue.backoff.ms": 100,
        # how much the consumer prefetches (StageSettings says why these values)
        "queued.max.messages.kbytes": settings.consumer_queue_max_kbytes,
        "queued.min.messages": settings.consumer_queue_min_messages,
        "fetch.max.bytes": settings.fetch_max_bytes,
        "max.partition.fetch.bytes": settings.partition_fetch_max_bytes,
    }
    if settings.static_membership:
        config["group.instance.id"] = client_id
    config.update(kafka.kafka_extra)  # the escape hatch wins: raw librdkafka settings
    return config


def transactional_producer_config(
    kafka: KafkaSettings,
    settings: StageSettings,
    *,
    client_id: str,
    transactional_id: str,
    limits: TopicLimits,
) -> dict[str, Any]:
    """The transactional producer of a stage worker (one per worker, one transaction at once).

    ``limits``: what each destination topic accepts. The producer takes records as large as
    the largest of them (so that a topic that allows 6 MiB gets its 5 MB record), and builds
    batches no larger than the smallest (a batch of small records to a topic with a low
    ``max.message.bytes`` would be refused whole).
    """
    return {
        **kafka.client_config(),
        "client.id": client_id,
        "transactional.id": transactional_id,
        "transaction.timeout.ms": settings.transaction_timeout_ms,
        # batching inside the transaction window; commit flushes at once regardless
        "linger.ms": 5,
        "batch.size": max(1024, min(_BATCH_BYTES, limits.smallest - RECORD_OVERHEAD_BYTES)),
        "message.max.bytes": limits.largest + HEADER_ROOM_BYTES,
        "queue.buffering.max.kbytes": settings.producer_queue_max_kbytes,
    }


def reader_config(kafka: KafkaSettings, *, group_id: str) -> dict[str, Any]:
    """A consumer that only assign()s and reads to the end (read_committed); it never commits.

    ``group_id`` only satisfies the client: the reader never joins the group.
    """
    return {
        **kafka.client_config(),
        "group.id": group_id,
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
    }
