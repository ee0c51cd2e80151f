"""Pipelines and dead letters for the replay tests (``streams dlq``, ``streams replay``).

``build(name, database)`` makes a pipeline with one stage ``work`` (``<name>.in`` ->
``<name>.out``, one retry tier of 0.5 s, 2 attempts) and one sink ``store`` (``<name>.out`` ->
SQLite: a table without a key, ``rows_all``, and one keyed on the idempotency key,
``rows_keyed``). The stage dead-letters every record while ``REPLAY_FAIL=1`` (a "bug") and
copies otherwise. The module-level ``pipeline`` is what a subprocess ``streams ...
tests.integration.replay_pipelines:pipeline`` loads: ``REPLAY_NAME``, ``REPLAY_DB``.

``dead_letters`` writes DLQ records as a stage would (``streams.stage.routing``'s headers),
with headers of their own before ours (duplicate names included), so that a test can compare
what a redrive wrote with what the DLQ held, byte for byte.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer

from streams import headers as h
from streams.codecs import raw
from streams.exceptions import DeadLetter
from streams.pipeline import Pipeline
from streams.record import Output, Record
from streams.retry import RetryPolicy
from streams.sinks import SinkTransaction

PARTITIONS = 4
ROWS_SQL = (
    "CREATE TABLE IF NOT EXISTS rows_all (n BIGINT NOT NULL, origin TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rows_keyed (origin TEXT PRIMARY KEY, n BIGINT NOT NULL)",
)


def work(record: Record[bytes]) -> Output:
    if os.environ.get("REPLAY_FAIL") == "1":
        raise DeadLetter("the handler has a bug")
    return Output(record.value, headers=[("src", f"{record.partition}:{record.offset}".encode())])


def store(record: Record[bytes], tx: SinkTransaction) -> None:
    row = {"n": int(record.value), "origin": record.idempotency_key}
    tx.execute("INSERT INTO rows_all (n, origin) VALUES (:n, :origin)", row)
    tx.execute(
        "INSERT INTO rows_keyed (origin, n) VALUES (:origin, :n) ON CONFLICT DO NOTHING", row
    )


def build(name: str, database: str, *, key_ordered: bool = False) -> Pipeline:
    pipeline = Pipeline(name, partitions=PARTITIONS)
    pipeline.add_stage(
        "work",
        work,
        inputs=[f"{name}.in"],
        outputs={f"{name}.out": raw()},
        retry=RetryPolicy(tiers=(0.5,), max_attempts=2, jitter=0.0, key_ordered=key_ordered),
    )
    pipeline.sink("store", inputs=[f"{name}.out"], database=database, setup_sql=ROWS_SQL)(store)
    return pipeline


@dataclass(frozen=True)
class Letter:
    """One dead letter as written: where it says it came from, and its own headers."""

    n: int
    key: bytes
    value: bytes
    own: list[tuple[str, bytes]]  # the record's own headers, before ours
    original: tuple[str, int, int]
    timestamp_ms: int


def dead_letters(
    config: dict[str, Any],
    name: str,
    count: int,
    *,
    reason: str = "retries-exhausted",
    source: str | None = None,
    first: int = 0,
    timestamp_ms: int | None = None,
) -> list[Letter]:
    """``count`` dead letters in ``<name>.work.dlq``, original partition ``n % 4``, as a stage
    writes them (key ``k<n % 50>``, value ``n``); returns them."""
    producer = Producer({**config, "enable.idempotence": True, "linger.ms": 5})
    dlq = f"{name}.work.dlq"
    topic = source or f"{name}.in"
    written = []
    # original timestamps of the last hour: the destinations' retention keeps them
    base = time.time_ns() // 1_000_000 - 3_600_000 if timestamp_ms is None else timestamp_ms
    for n in range(first, first + count):
        partition, offset = n % PARTITIONS, n // PARTITIONS
        stamp = base + n
        own = [("trace", f"t{n}".encode()), ("dup", b"a"), ("dup", b"b")]
        found: list[tuple[str, str | bytes | None]] = [
            *own,
            (h.ORIGINAL_TOPIC, topic.encode()),
            (h.ORIGINAL_PARTITION, str(partition).encode()),
            (h.ORIGINAL_OFFSET, str(offset).encode()),
            (h.ORIGINAL_TIMESTAMP, str(stamp).encode()),
            (h.STAGE, f"{name}.work".encode()),
            (h.ATTEMPT, b"2"),
            (h.FIRST_FAILURE_MS, b"1700000000000"),
            (h.ERROR_REASON, reason.encode()),
            (h.ERROR_CLASS, b"streams.exceptions.DependencyUnavailable"),
            (h.ERROR_MESSAGE, b"pricing: down"),
            (h.ERROR_STACK, b"Traceback (most recent call last): ..."),
        ]
        key, value = f"k{n % 50}".encode(), str(n).encode()
        while True:
            try:
                producer.produce(dlq, value, key, partition=n % PARTITIONS, headers=found)
                break
            except BufferError:
                producer.poll(0.1)
        written.append(Letter(n, key, value, own, (topic, partition, offset), stamp))
    assert producer.flush(60) == 0
    return written


pipeline = build(
    os.environ.get("REPLAY_NAME", "replaytest"),
    os.environ.get("REPLAY_DB", "sqlite:///replaytest.db"),
)


@dataclass
class Setup:
    """One test's pipeline: its name, database, topics created; env for subprocesses."""

    name: str
    database: str
    pipeline: Pipeline
    config: dict[str, Any]

    @property
    def dlq(self) -> str:
        return f"{self.name}.work.dlq"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "REPLAY_NAME": self.name, "REPLAY_DB": self.database}


def produce_inputs(config: dict[str, Any], topic: str, count: int, *, first: int = 0) -> None:
    """Values ``first..first+count-1``, keys ``k<n % 50>``, to ``topic``."""
    producer = Producer({**config, "enable.idempotence": True, "linger.ms": 5})
    for n in range(first, first + count):
        producer.produce(topic, str(n).encode(), f"k{n % 50}".encode())
        producer.poll(0)
    assert producer.flush(60) == 0
