"""Per-stage counters of one worker: consumed, produced, transactions, batch latency."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["StageStats"]


@dataclass
class StageStats:
    """Counters since the worker started; ``snapshot()`` is what gets logged."""

    consumed: int = 0
    produced: int = 0
    retried: int = 0
    dead_lettered: int = 0
    parked: int = 0  # key-ordered retries: records parked behind an earlier one of their key
    transactions_committed: int = 0
    transactions_aborted: int = 0
    producer_resets: int = 0
    rewinds: int = 0
    batches: int = 0
    batch_seconds_total: float = 0.0
    batch_seconds_max: float = 0.0
    started_at: float = field(default_factory=time.monotonic)

    def observe_batch(self, seconds: float) -> None:
        self.batches += 1
        self.batch_seconds_total += seconds
        self.batch_seconds_max = max(self.batch_seconds_max, seconds)

    def snapshot(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("started_at")
        elapsed = max(time.monotonic() - self.started_at, 1e-9)
        data["uptime_s"] = round(elapsed, 1)
        data["consumed_per_s"] = round(self.consumed / elapsed, 1)
        data["batch_ms_mean"] = round(1000 * self.batch_seconds_total / max(self.batches, 1), 2)
        data["batch_ms_max"] = round(1000 * self.batch_seconds_max, 2)
        del data["batch_seconds_total"], data["batch_seconds_max"]
        return data
