"""The aggregate chaos pipeline: per-key counts and sums in 1-second tumbling windows.

    <name>.in --totals (aggregate)--> <name>.out      state: <name>.totals.changelog

Values are numbers ``n``, keys ``k0``..``k8``. The event time is a function of the value
(``event_ms``): 10 ms per number, with every 7th record 300 ms out of order (within the 500 ms
grace: it must fold) and every 400th, from 200 on, 5 s late (beyond it: it must go to the DLQ
with reason ``late``). Every 1000th, from 500 on, is poison (DeadLetter). Everything is
deterministic in ``n``, so ``tests.chaos.aggregate_check`` recomputes every window offline.
Environment: CHAOS_NAME, CHAOS_STORE (memory | rocksdb | sqlite).
"""

from __future__ import annotations

import os
from typing import Any, Literal, cast

from streams.exceptions import DeadLetter
from streams.pipeline import Pipeline
from streams.record import Record
from streams.retry import RetryPolicy
from streams.windows import Tumbling

PARTITIONS = 4
KEYS = 9
BASE_MS = 1_700_000_000_000  # a whole second: windows start on multiples of 1,000 ms
WINDOW = Tumbling(1.0, grace_s=0.5)
STAGE = "totals"


def event_ms(n: int) -> int:
    if is_late(n):
        return BASE_MS + n * 10 - 5000
    if n % 7 == 3:
        return BASE_MS + n * 10 - 300
    return BASE_MS + n * 10


def is_late(n: int) -> bool:
    return n % 400 == 200


def is_poison(n: int) -> bool:
    return n % 1000 == 500


def topics(name: str) -> tuple[str, str]:
    return f"{name}.in", f"{name}.out"


def fold(total: list[int], record: Record[bytes]) -> list[int]:
    n = int(record.value)
    if is_poison(n):
        raise DeadLetter("poison record")
    return [total[0] + 1, total[1] + n]


def build(name: str, store: str = "rocksdb") -> Pipeline:
    pipeline = Pipeline(name, partitions=PARTITIONS)
    source, sink = topics(name)
    pipeline.aggregate(
        STAGE,
        inputs=[source],
        outputs=[sink],
        initial=lambda: [0, 0],
        window=WINDOW,
        event_time=lambda value: event_ms(int(value)),
        store=cast("Literal['memory', 'rocksdb', 'sqlite']", store),
        retry=RetryPolicy(tiers=(0.5, 1.0), max_attempts=3),
    )(fold)
    return pipeline


def parse_output(value: bytes) -> dict[str, Any]:
    import json  # noqa: PLC0415

    found: dict[str, Any] = json.loads(value)
    return found


pipeline = build(os.environ.get("CHAOS_NAME", "aggchaos"), os.environ.get("CHAOS_STORE", "rocksdb"))


RUNNING_STAGE = "running"


def add(total: int, record: Record[bytes]) -> int:
    return total + int(record.value)


def build_running(name: str, store: str = "rocksdb") -> Pipeline:
    """A running sum per key (no window), written after every record (``emit="update"``)."""
    running_pipeline = Pipeline(name, partitions=PARTITIONS)
    source, sink = topics(name)
    running_pipeline.aggregate(
        RUNNING_STAGE,
        inputs=[source],
        outputs=[sink],
        initial=0,
        emit="update",
        store=cast("Literal['memory', 'rocksdb', 'sqlite']", store),
    )(add)
    return running_pipeline


running = build_running(
    os.environ.get("CHAOS_NAME", "aggrunning"), os.environ.get("CHAOS_STORE", "rocksdb")
)
