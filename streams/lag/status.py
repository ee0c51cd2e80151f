"""The status rules of a partition's lag history: pure functions, no broker.

**Status** (per partition; the first rule that matches wins; the rule that fired is reported):

===========  ================================================================================
ERR          committed < log start: records were deleted by retention before being consumed
OK           no commit on the partition (nothing to judge; lag is unknown)
OK           lag 0 (caught up; ``allowed_lag`` = 0 as in Burrow)
STOP         lag > 0 and the committed offset has not moved for ``window_s`` (over at least
             ``min_samples`` samples) and no live member owns the partition
REWIND       within the window the committed offset went backwards and has not yet come back
STALL        as STOP, but a live member owns the partition (it runs, yet does not progress)
WARN         lag grew over the window: positive least-squares slope and last > first, over at
             least ``min_samples`` samples in the window
WARN         an open transaction holds the LSO longer than ``transaction_timeout_s``
             (applied by ``LagMonitor``, which knows how long the LSO has been held)
OK           otherwise (catching up, steady, or too little history yet)
===========  ================================================================================

Differences from Burrow (linkedin/Burrow ``core/internal/evaluator/caching.go``):

- The window is in wall-clock time (``window_s``) *and* needs ``min_samples`` samples, instead of
  a number of commits whose span depends on the commit rate (Burrow#303).
- Burrow's rule 1 ("any zero-lag entry in the window means OK") is gone: a single zero-lag commit
  no longer hides a stall or a growing lag for a whole window (Burrow#745). STOP and STALL count
  from when the lag became > 0 at the current committed offset, which also replaces Burrow's
  "a recent broker sample was <= the last commit" suppression of STOP.
- The admin API does not show commits that do not move the offset, so "commits without moving"
  (STALL) and "stopped committing" (STOP) are told apart by group membership: a partition owned
  by a live member is STALL, one owned by nobody is STOP. Groups with no members are evaluated
  like any other (kafka_exporter#226).

**Group rules**, applied over the worst partition's status:

===========  ================================================================================
ERR          the group does not exist (Dead, no member, no committed offset): nobody consumes
             what it was meant to, and a one-shot ``streams lag --group G`` must say so
WARN         no live member while its lag is > 0 (``no members, lag N``): nobody consumes, and
             without history the partition rules cannot yet call it a STOP
===========  ================================================================================

**Group status** is otherwise the worst of its partitions in the order
``OK < WARN < STALL < REWIND < STOP < ERR``: a stalled consumer still runs and may recover; a
rewind reprocesses (duplicates downstream of non-EOS consumers); a stop means nobody consumes; ERR
means records were lost (or, for a group, that it does not exist). Unlike Burrow,
STOP/STALL/REWIND are not folded into ERR.

**Replay tasks do not change a status.** A group reset by ``streams replay reset`` shows REWIND,
and one a redrive or copy writes into shows its lag, exactly as these rules say: the lag view
adds which task explains the status (``explained_by``, ``streams.lag.marks``) rather than
hiding it, so the numbers stay true and the reason sits next to them. A reset explains a
REWIND; any task explains a WARN or a lag; nothing explains STALL, STOP or ERR.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "Observation",
    "Status",
    "evaluate_group",
    "evaluate_partition",
    "interpolate_arrival",
    "slope",
    "trend",
    "worst",
]


class Status(enum.StrEnum):
    """Health of a partition or group; ``severity`` orders them (see the module docstring)."""

    OK = "OK"
    WARN = "WARN"
    STALL = "STALL"
    STOP = "STOP"
    REWIND = "REWIND"
    ERR = "ERR"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {
    Status.OK: 0,
    Status.WARN: 1,
    Status.STALL: 2,
    Status.REWIND: 3,
    Status.STOP: 4,
    Status.ERR: 5,
}

Verdict = tuple[Status, str]


@dataclass(frozen=True)
class Observation:
    """One sample of one group's partition: when, the committed offset, the LSO and the lag."""

    t: float
    committed: int | None
    end: int
    lag: int | None


def worst(statuses: Iterable[Status]) -> Status:
    """The most severe status (OK for none)."""
    return max(statuses, key=lambda status: status.severity, default=Status.OK)


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None with fewer than 2 points or no time spread."""
    if len(points) < 2:  # noqa: PLR2004 - a line needs two points
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def trend(history: Sequence[Observation], now: float, window_s: float) -> float | None:
    """Lag velocity over the window (records/s; negative while catching up)."""
    points = [(o.t, float(o.lag)) for o in history if o.t >= now - window_s and o.lag is not None]
    return slope(points)


def interpolate_arrival(points: Sequence[tuple[float, int]], offset: int) -> float | None:
    """When the end offset passed ``offset``, from (time, end offset) points (oldest first)."""
    if len(points) < 2:  # noqa: PLR2004 - a line needs two points
        return None
    for (t0, e0), (t1, e1) in itertools.pairwise(points):
        if e0 <= offset < e1:
            return t0 + (offset - e0) * (t1 - t0) / (e1 - e0)
    (t_first, e_first), (t_last, e_last) = points[0], points[-1]
    if offset < e_first and e_last > e_first and t_last > t_first:
        rate = (e_last - e_first) / (t_last - t_first)
        return t_first - (e_first - offset) / rate
    return None


def evaluate_partition(  # noqa: PLR0911 - one return per rule, in the table's order
    history: Sequence[Observation],
    *,
    now: float,
    window_s: float,
    min_samples: int,
    owned: bool,
    log_start: int = 0,
    allowed_lag: int = 0,
) -> Verdict:
    """The status of one partition and the rule that fired, from its history (last = current).

    ``owned``: a live member of the group has the partition assigned. Pure: no broker.
    """
    if not history:
        return Status.OK, "OK: no sample yet"
    current = history[-1]
    if current.committed is None or current.lag is None:
        return Status.OK, "OK: no commit (lag unknown)"
    if current.committed < log_start:
        return _data_loss(current.committed, log_start)
    if current.lag <= allowed_lag:
        return Status.OK, "OK: caught up (lag 0)"
    stuck_for, stuck_samples = _stuck(history, allowed_lag, now)
    stuck = stuck_for >= window_s and stuck_samples >= min_samples
    if stuck and not owned:
        return (
            Status.STOP,
            (
                f"STOP: no commit for {stuck_for:.0f} s while lag > 0 "
                f"(committed {current.committed}, lag {current.lag}, no live member owns it)"
            ),
        )
    window = [o for o in history if o.t >= now - window_s and o.committed is not None]
    rewound = _rewind(window, now)
    if rewound is not None:
        return rewound
    if stuck:
        return (
            Status.STALL,
            (
                f"STALL: committed offset {current.committed} unchanged for {stuck_for:.0f} s "
                f"while lag > 0 (lag {current.lag}; a live member owns the partition)"
            ),
        )
    return _growth(window, current, min_samples)


def _data_loss(committed: int, log_start: int) -> Verdict:
    return (
        Status.ERR,
        (
            f"ERR: committed offset {committed} is below log start {log_start}: "
            f"{log_start - committed} records deleted by retention before being consumed"
        ),
    )


def _stuck(history: Sequence[Observation], allowed_lag: int, now: float) -> tuple[float, int]:
    """Seconds and samples of the trailing run at the current committed offset with lag > 0."""
    current = history[-1]
    run_start = len(history) - 1
    while run_start > 0:
        previous = history[run_start - 1]
        if (
            previous.committed != current.committed
            or previous.lag is None
            or previous.lag <= allowed_lag
        ):
            break
        run_start -= 1
    return now - history[run_start].t, len(history) - run_start


def _rewind(window: Sequence[Observation], now: float) -> Verdict | None:
    """REWIND if the last backwards step of the committed offset has not been made up yet."""
    for i in range(len(window) - 1, 0, -1):
        before, after = window[i - 1].committed, window[i].committed
        if before is None or after is None:  # the window holds committed offsets only
            continue
        if after < before:
            if all(o.committed is not None and o.committed < before for o in window[i:]):
                return (
                    Status.REWIND,
                    (
                        f"REWIND: committed offset went back from {before} to {after} "
                        f"{now - window[i].t:.0f} s ago and has not come back"
                    ),
                )
            break
    return None


def _growth(window: Sequence[Observation], current: Observation, min_samples: int) -> Verdict:
    """WARN when the lag grew over the window; else OK, saying whether history sufficed."""
    lags = [(o.t, float(o.lag)) for o in window if o.lag is not None]
    if len(lags) < min_samples:
        return (
            Status.OK,
            (
                f"OK: lag {current.lag}, too little history to judge ({len(lags)} of "
                f"{min_samples} samples)"
            ),
        )
    rate = slope(lags)
    first, last = lags[0][1], lags[-1][1]
    span = lags[-1][0] - lags[0][0]
    if rate is not None and rate > 0 and last > first:
        return (
            Status.WARN,
            (
                f"WARN: lag grew from {first:.0f} to {last:.0f} over {span:.0f} s "
                f"({rate:+.1f} records/s, {len(lags)} samples)"
            ),
        )
    return Status.OK, f"OK: lag {current.lag}, not growing"


def evaluate_group(partitions: Verdict, *, exists: bool, members: int, sum_lag: int) -> Verdict:
    """The group's status: its own rules (see the table above), else its partitions' verdict."""
    if not exists:
        return Status.ERR, "ERR: group does not exist"
    if members == 0 and sum_lag > 0 and partitions[0] is Status.OK:
        return Status.WARN, f"WARN: no members, lag {sum_lag}"
    return partitions
