"""The records of the compacted topic ``_streams.stats``: one wire shape per writer.

**Workers.** Every snapshot carries ``kind`` (``stage`` or ``sink``), ``group`` and ``slot``,
then the counters of its kind; ``streams.runtime.publish`` writes it under the key
``<group>/<slot>``, and the monitor reads it back (``streams.observability.stats_reader``).

**Supervisors.** ``streams run`` publishes one ``SupervisorReport`` per stage group, under the
key ``<group>/supervisor@<host>:<pid>``, every few seconds and whenever a slot changes::

    {"kind": "supervisor", "group": "P.S", "state": "running", "desired": 2, "running": 1,
     "slots": [{"slot": 0, "state": "running", "exit_code": null, "restarts": 0, "reason": ""},
               {"slot": 1, "state": "down", "exit_code": 5, "restarts": 0,
                "reason": "exited 5 (cannot start)"}],
     "interval_s": 5.0, "ts_ms": 1764633600000, "host": "box", "pid": 4242}

A slot is ``running``, ``restarting`` (it crashed and waits for its back-off) or ``down`` (it
ended with a code that is not restarted, or on request). A supervisor that stops cleanly writes
a last record with ``state`` ``stopped`` and ``desired`` 0, so that a clean stop is no alarm;
one whose workers all ended on their own writes ``state`` ``exited`` and keeps ``desired``.
Readers ignore a record older than three of its ``interval_s``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

__all__ = [
    "SUPERVISOR_KIND",
    "ComponentStats",
    "SinkStats",
    "SlotReport",
    "StageStats",
    "SupervisorReport",
]

SUPERVISOR_KIND = "supervisor"
SlotState = Literal["running", "restarting", "down"]
_SLOT_STATES: tuple[SlotState, ...] = ("running", "restarting", "down")
# missed publications after which a supervisor's record no longer counts (it died unseen)
_STALE_INTERVALS = 3


@dataclass(frozen=True)
class SlotReport:
    """One worker slot as its supervisor sees it."""

    slot: int
    state: SlotState
    exit_code: int | None = None
    restarts: int = 0
    reason: str = ""


@dataclass(frozen=True)
class SupervisorReport:
    """One supervisor's slots of one stage group (see the module docstring)."""

    group: str
    desired: int
    running: int
    slots: tuple[SlotReport, ...]
    ts_ms: int
    host: str
    pid: int
    state: str = "running"  # running | stopped | exited
    interval_s: float = 5.0

    @property
    def key(self) -> str:
        return f"{self.group}/supervisor@{self.host}:{self.pid}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": SUPERVISOR_KIND, **asdict(self), "slots": [asdict(s) for s in self.slots]}

    def is_live(self, now_s: float) -> bool:
        """Recent enough to count: at most three of its own intervals old."""
        return now_s * 1000 - self.ts_ms <= _STALE_INTERVALS * self.interval_s * 1000

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> SupervisorReport | None:
        """The report in a decoded ``_streams.stats`` value; None if it is not a valid one."""
        if payload.get("kind") != SUPERVISOR_KIND:
            return None
        try:
            slots = tuple(
                SlotReport(
                    slot=int(s["slot"]),
                    state=s["state"] if s["state"] in _SLOT_STATES else "down",
                    exit_code=None if s.get("exit_code") is None else int(s["exit_code"]),
                    restarts=int(s.get("restarts", 0)),
                    reason=str(s.get("reason", "")),
                )
                for s in payload.get("slots") or ()
            )
            return cls(
                group=str(payload["group"]),
                desired=int(payload["desired"]),
                running=int(payload["running"]),
                slots=slots,
                ts_ms=int(payload["ts_ms"]),
                host=str(payload.get("host", "")),
                pid=int(payload.get("pid", 0)),
                state=str(payload.get("state", "running")),
                interval_s=float(payload.get("interval_s") or 5.0),
            )
        except (KeyError, TypeError, ValueError):
            return None


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
