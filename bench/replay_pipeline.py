"""The pipeline of the replay benchmark: one stage ``work`` that copies, with a retry tier.

``<name>.in`` -> ``<name>.out``; the module-level ``pipeline`` is what a worker subprocess
(``python -m streams.runtime.worker bench.replay_pipeline:pipeline --stage work``) loads, named
by ``BENCH_REPLAY_NAME``. ``dead_letters`` fills the stage's DLQ as the stage would write it.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterable, Iterator
from typing import Any

from confluent_kafka import Producer

from streams import headers as h
from streams.codecs import raw
from streams.pipeline import Pipeline
from streams.record import Output, Record
from streams.retry import RetryPolicy

__all__ = ["PARTITIONS", "build", "dead_letters", "inputs", "pipeline"]

PARTITIONS = 4
KEYS = 128


def work(record: Record[bytes]) -> Output:
    return Output(record.value)


def build(name: str) -> Pipeline:
    built = Pipeline(name, partitions=PARTITIONS)
    built.add_stage(
        "work",
        work,
        inputs=[f"{name}.in"],
        outputs={f"{name}.out": raw()},
        retry=RetryPolicy(tiers=(0.5,), max_attempts=2, jitter=0.0),
    )
    return built


def _value(n: int, size: int, rng: random.Random) -> bytes:
    return n.to_bytes(8, "big") + rng.randbytes(max(0, size - 8))


Row = tuple[str, bytes, bytes, int, Any]  # topic, key, value, partition (-1: by key), headers


def _produce_all(config: dict[str, Any], rows: Iterable[Row]) -> None:
    producer = Producer({**config, "enable.idempotence": True, "linger.ms": 5})
    for topic, key, value, partition, headers in rows:
        while True:
            try:
                producer.produce(topic, value, key, partition=partition, headers=headers)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError("the benchmark's records were not all delivered")


def dead_letters(config: dict[str, Any], name: str, count: int, size: int) -> None:
    """``count`` dead letters of ``size``-byte values in ``<name>.work.dlq``, as a stage writes
    them (original ``<name>.in``, partition ``n % 4``, the stage's error headers)."""
    rng = random.Random(count * 1000 + size)
    stamp = time.time_ns() // 1_000_000
    rows = []
    for n in range(count):
        partition = n % PARTITIONS
        headers: list[tuple[str, bytes]] = [
            (h.ORIGINAL_TOPIC, f"{name}.in".encode()),
            (h.ORIGINAL_PARTITION, str(partition).encode()),
            (h.ORIGINAL_OFFSET, str(n // PARTITIONS).encode()),
            (h.ORIGINAL_TIMESTAMP, str(stamp + n).encode()),
            (h.STAGE, f"{name}.work".encode()),
            (h.ATTEMPT, b"2"),
            (h.ERROR_REASON, b"retries-exhausted"),
            (h.ERROR_CLASS, b"streams.exceptions.DependencyUnavailable"),
            (h.ERROR_MESSAGE, b"pricing: down"),
        ]
        key = f"k{n % KEYS}".encode()
        rows.append((f"{name}.work.dlq", key, _value(n, size, rng), partition, headers))
    _produce_all(config, rows)


def inputs(config: dict[str, Any], name: str, count: int, size: int) -> None:
    """``count`` new records of ``size`` bytes in ``<name>.in``, partitioned by key.

    Generated as they are produced: the live windows need millions of them.
    """
    rng = random.Random(count * 7 + size)
    topic = f"{name}.in"

    def rows() -> Iterator[Row]:
        for n in range(count):
            yield topic, f"k{n % KEYS}".encode(), _value(n, size, rng), -1, None

    _produce_all(config, rows())


pipeline = build(os.environ.get("BENCH_REPLAY_NAME", "bench-replay"))
