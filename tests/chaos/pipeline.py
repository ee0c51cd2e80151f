"""The chaos pipeline: three Kafka stages and a SQL sink, each failure kind injected on purpose.

    <name>.in --a--> <name>.mid1 --b--> <name>.mid2 --c--> <name>.out --store--> SQLite

Values are numbers, keys ``k0``..``k8``. Per stage, about 1 % of records fail their first
attempt (a quarter of those also their second) with RetryLater, and 0.1 % are poison for
stage ``b`` (DeadLetter). Everything is deterministic in the record number, so the checker
knows what to expect. Environment: CHAOS_NAME, CHAOS_DB (SQLite file), CHAOS_DELAY_MS,
CHAOS_KEY_ORDERED=1 (every stage with key-ordered retries: then all records keep per-key order).
"""

from __future__ import annotations

import hashlib
import os
import time

from streams import headers
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
    def handle(record: Record[bytes]) -> Output:
        if _DELAY_S:
            time.sleep(_DELAY_S)
        n = int(record.value)
        if stage == "b" and is_poison(n):
            raise DeadLetter("poison record")
        attempt = headers.get_int(record.headers, headers.ATTEMPT) or 0
        if attempt < failures_planned(n, stage):
            raise RetryLater(f"planned failure {attempt + 1}")
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


def build(name: str, database: str) -> Pipeline:
    pipeline = Pipeline(name, partitions=PARTITIONS)
    names = topics(name)
    retry = RetryPolicy(tiers=(0.5, 1.0), max_attempts=4, jitter=0.1, key_ordered=_KEY_ORDERED)
    for stage, source, sink in zip(STAGES, names, names[1:], strict=False):
        pipeline.add_stage(
            stage,
            _stage(stage),  # type: ignore[arg-type]
            inputs=[source],
            outputs={sink: raw()},
            retry=retry,
        )
    pipeline.sink("store", inputs=[names[-1]], database=database, setup_sql=[ROWS])(store)
    return pipeline


pipeline = build(
    os.environ.get("CHAOS_NAME", "chaos"),
    os.environ.get("CHAOS_DB", "sqlite:///chaos.db"),
)
