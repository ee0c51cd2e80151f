"""Replay marks: the replay tasks changing a group's input now, and which statuses they explain.

A redrive or a copy writing into a group's input, and a reset of its offsets, make lag (and a
reset a REWIND) on purpose. The lag view does not hide the status such a task causes: it keeps
it, and says which task explains it (``explained_by``):

===========  ================================================================================
REWIND       explained by a reset of the group within its window (a redrive or a copy adds
             records, it never moves a committed offset back)
WARN         explained by any task (its lag grows, or nobody consumes while the group is
             stopped for a reset)
OK, lag > 0  explained by any task (the backlog is the task's)
STALL, STOP  never explained: a task does not stop a consumer from moving (a reset needs the
and ERR      workers stopped, but once they are started again a STOP means nobody consumes)
===========  ================================================================================

The marks are shown in any case (``replay`` beside the group), so an operator sees the task
also next to a status it does not explain. This package does not read the replay ledger: the
layer above gives ``LagMonitor`` a ``ReplaySource`` (``streams.replay.tasks.ReplayMarks``).
Pure: no broker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from streams.lag.status import Status

__all__ = ["ReplayMark", "ReplaySource", "explain", "explains"]


@dataclass(frozen=True)
class ReplayMark:
    """A replay task that affects a group: its kind, id, status and progress.

    ``until_ms``: a reset is complete the moment it is written, and is marked until then (its
    start plus the window); None for a redrive or a copy, marked while it is active.
    """

    task: str
    kind: str
    status: str
    moved: int
    to_move: int
    started_ms: int
    updated_ms: int
    until_ms: int | None = None

    def describe(self, now_ms: int) -> str:
        """``reset task T, 2 min ago, 10 min window`` or ``redrive task T: 700/10,000 moved``."""
        if self.kind == "reset":
            window = ""
            if self.until_ms is not None:
                window = f", {_minutes(self.until_ms - self.started_ms)} window"
            return f"reset task {self.task}, {_ago(now_ms - self.started_ms)} ago{window}"
        state = "" if self.status == "RUNNING" else f", {self.status}"
        return f"{self.kind} task {self.task}: {self.moved:,}/{self.to_move:,} moved{state}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ReplaySource(Protocol):
    """What ``LagMonitor`` needs to mark groups: group -> its marks, read once per sample.

    It must answer within a moment and never raise for a missing or unreadable ledger (no
    marks then): the lag view works without it.
    """

    def marks(self, now_ms: int) -> Mapping[str, Sequence[ReplayMark]]: ...

    def reconnect(self) -> None: ...

    def close(self) -> None: ...


def explains(mark: ReplayMark, status: Status, lag: int | None) -> bool:
    """Whether the task explains the status of a group (or partition) with this lag."""
    if status is Status.REWIND:
        return mark.kind == "reset"
    return status is Status.WARN or (status is Status.OK and bool(lag))


def explain(
    status: Status, lag: int | None, marks: Sequence[ReplayMark], now_ms: int
) -> str | None:
    """The marks that explain the status (see the table above), described; None if none."""
    found = [m.describe(now_ms) for m in marks if explains(m, status, lag)]
    return "; ".join(found) or None


def _minutes(ms: int) -> str:
    return f"{max(0, ms) / 60_000:.0f} min"


def _ago(ms: int) -> str:
    seconds = max(0, ms) / 1000
    return f"{seconds:.0f} s" if seconds < 60 else _minutes(ms)  # noqa: PLR2004 - a minute
