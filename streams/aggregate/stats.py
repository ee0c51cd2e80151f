"""An aggregate worker's counters: a stage's, plus state, windows, lateness and restores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from streams.stats import StageStats

__all__ = ["AggregateStats"]


@dataclass
class AggregateStats(StageStats):
    """Published like every worker's (``_streams.stats``); the lag view shows the restore.

    ``restore_to_restore`` / ``restore_restored``: changelog offsets to replay and records
    replayed by the restore in progress or the last one (``restoring`` 1 while it runs).
    """

    kind: ClassVar[str] = "aggregate"

    late: int = 0  # records every window of which had closed (DLQ reason late, or dropped)
    late_dropped: int = 0
    late_windows: int = 0  # hopping windows a record that still folded elsewhere came too late for
    windows_closed: int = 0
    emitted: int = 0
    changelog_records: int = 0
    changelog_bytes: int = 0
    state_partitions: int = 0
    state_keys: int = 0  # window/table keys in this worker's stores (RocksDB: an estimate)
    restoring: int = 0
    restore_to_restore: int = 0
    restore_restored: int = 0
    restore_seconds_last: float = 0.0
    restores_full: int = 0
    restores_from_checkpoint: int = 0
