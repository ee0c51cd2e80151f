"""The counters of one worker, with one wire shape for every component kind.

Every snapshot carries ``kind`` (``stage`` or ``sink``), ``group`` and ``slot``, then the
counters of its kind; ``streams.runtime.publish`` writes it to ``_streams.stats`` as is, and the
monitor reads it back (``streams.observability.stats_reader``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

__all__ = ["ComponentStats", "SinkStats", "StageStats"]


@dataclass
class ComponentStats:
    """Counters every worker keeps since it started."""

    kind: ClassVar[str] = "component"
    # (name in the snapshot, counter): the rate per second since start-up that gets logged
    rate: ClassVar[tuple[str, str] | None] = None

    consumed: int = 0
    rewinds: int = 0
    started_at: float = field(default_factory=time.monotonic)

    def snapshot(self, *, group: str, slot: int) -> dict[str, Any]:
        """What gets logged and published: identity first, then the counters."""
        data = asdict(self)
        data.pop("started_at")
        elapsed = max(time.monotonic() - self.started_at, 1e-9)
        data["uptime_s"] = round(elapsed, 1)
        if self.rate is not None:
            name, counter = self.rate
            data[name] = round(getattr(self, counter) / elapsed, 1)
        return {"kind": self.kind, "group": group, "slot": slot, **data}


@dataclass
class StageStats(ComponentStats):
    """A stage worker's counters: records, routing, transactions, recovery, batch latency."""

    kind: ClassVar[str] = "stage"
    rate: ClassVar[tuple[str, str] | None] = ("consumed_per_s", "consumed")

    produced: int = 0
    retried: int = 0
    dead_lettered: int = 0
    parked: int = 0  # key-ordered retries: records parked behind an earlier one of their key
    transactions_committed: int = 0
    transactions_aborted: int = 0
    producer_resets: int = 0
    batches: int = 0
    batch_seconds_total: float = 0.0
    batch_seconds_max: float = 0.0

    def observe_batch(self, seconds: float) -> None:
        self.batches += 1
        self.batch_seconds_total += seconds
        self.batch_seconds_max = max(self.batch_seconds_max, seconds)

    def snapshot(self, *, group: str, slot: int) -> dict[str, Any]:
        data = super().snapshot(group=group, slot=slot)
        data["batch_ms_mean"] = round(1000 * self.batch_seconds_total / max(self.batches, 1), 2)
        data["batch_ms_max"] = round(1000 * self.batch_seconds_max, 2)
        del data["batch_seconds_total"], data["batch_seconds_max"]
        return data


@dataclass
class SinkStats(ComponentStats):
    """A sink worker's counters: records and batches committed to the database."""

    kind: ClassVar[str] = "sink"
    rate: ClassVar[tuple[str, str] | None] = ("committed_per_s", "records_committed")

    records_committed: int = 0
    batches_committed: int = 0
    batches_rolled_back: int = 0
    offset_conflicts: int = 0
