"""The chaos pipeline: three Kafka stages and a SQL sink, each failure kind injected on purpose.

    <name>.in --a--> <name>.mid1 --b--> <name>.mid2 --c--> <name>.out --store--> SQLite

Values are numbers, keys ``k0``..``k8``. Per stage, about 1 % of records fail their first
attempt (a quarter of those also their second) with RetryLater, and 0.1 % are poison for
stage ``b`` (DeadLetter). Everything is deterministic in the record number, so the checker
knows what to expect. Environment: CHAOS_NAME, CHAOS_DB (SQLite file), CHAOS_DELAY_MS,
CHAOS_KEY_ORDERED=1 (every stage with key-ordered retries: then all records keep per-key order),
CHAOS_AVRO=1 (``mid1`` holds Avro ``chaos.ChaosNumber`` records on the schema registry: stage a
encodes, stage b decodes, so a registry outage matters; the workers need STREAMS_SCHEMAS_DIR =
tests/chaos/schemas). The input topic accepts records up to 6 MiB, so that a test can feed one
larger than what the DLQ takes.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from streams import headers
from streams.codecs import avro as avro_codec
from streams.codecs import raw
from streams.exceptions import DeadLetter, RetryLater
from streams.pipeline import Pipeline
from streams.record import Output, Record
from streams.retry import RetryPolicy
from streams.sinks import SinkTransaction

PARTITIONS = 4
KEYS = 9
STAGES = ("a", "b", "c")
_DELAY_S = float(os.environ.get("CHAOS_DELAY_MS", "0")) / 1000
_KEY_ORDERED = os.environ.get("CHAOS_KEY_ORDERED") == "1"
_AVRO = os.environ.get("CHAOS_AVRO") == "1"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
NUMBER_SCHEMA = "chaos/number.v1.avsc"
INPUT_MAX_BYTES = 6 * 1024 * 1024


class ChaosNumber(BaseModel):
    """Bound to tests/chaos/schemas/chaos/number.v1.avsc."""

    n: int


def failures_planned(n: int, stage: str) -> int:
    """How many times record ``n`` fails at ``stage`` before it succeeds (0, 1 or 2)."""
    digest = int(hashlib.blake2b(f"{stage}:{n}".encode(), digest_size=4).hexdigest(), 16)
    if digest % 100:
        return 0
    return 2 if digest % 400 == 0 else 1


def is_poison(n: int) -> bool:
    return n % 1000 == 500


def topics(name: str) -> list[str]:
    return [f"{name}.in", f"{name}.mid1", f"{name}.mid2", f"{name}.out"]


def _stage(stage: str) -> object:
    def handle(record: Record[Any]) -> Output:
        if _DELAY_S:
            time.sleep(_DELAY_S)
        n = record.value.n if isinstance(record.value, ChaosNumber) else int(record.value)
        if stage == "b" and is_poison(n):
            raise DeadLetter("poison record")
        attempt = headers.get_int(record.headers, headers.ATTEMPT) or 0
        if attempt < failures_planned(n, stage):
            raise RetryLater(f"planned failure {attempt + 1}")
        if isinstance(record.value, ChaosNumber):
            return Output(str(n).encode())  # stage b: back to the plain number
        if _AVRO and stage == "a":
            return Output(ChaosNumber(n=n))
        return Output(record.value)

    handle.__name__ = f"stage_{stage}"
    return handle


ROWS = "CREATE TABLE IF NOT EXISTS chaos_rows (n BIGINT NOT NULL, origin TEXT NOT NULL)"


def store(record: Record[bytes], tx: SinkTransaction) -> None:
    # no unique key on purpose: a duplicate would show up as a second row
    tx.execute(
        "INSERT INTO chaos_rows (n, origin) VALUES (:n, :origin)",
        {"n": int(record.value), "origin": record.idempotency_key},
    )


def build(name: str, database: str, *, avro: bool = _AVRO) -> Pipeline:
    pipeline = Pipeline(name, partitions=PARTITIONS)
    names = topics(name)
    pipeline.topic(names[0], config={"max.message.bytes": str(INPUT_MAX_BYTES)})
    retry = RetryPolicy(tiers=(0.5, 1.0), max_attempts=4, jitter=0.1, key_ordered=_KEY_ORDERED)
    number = avro_codec(ChaosNumber, NUMBER_SCHEMA)
    for stage, source, sink in zip(STAGES, names, names[1:], strict=False):
        pipeline.add_stage(
            stage,
            _stage(stage),  # type: ignore[arg-type]
            inputs=[source],
            input=number if avro and stage == "b" else raw(),
            outputs={sink: number if avro and stage == "a" else raw()},
            retry=retry,
        )
    pipeline.sink("store", inputs=[names[-1]], database=database, setup_sql=[ROWS])(store)
    return pipeline


pipeline = build(
    os.environ.get("CHAOS_NAME", "chaos"),
    os.environ.get("CHAOS_DB", "sqlite:///chaos.db"),
)
