"""Which offsets of a partition hold records a read_committed consumer sees: a ledger of gaps.

A transactional producer writes a commit (or abort) marker after each transaction, and an
aborted transaction leaves records no read_committed reader ever sees. Offsets are therefore no
count of records: ``LSO - log start`` of a dead-letter topic written by EOS stages counted
4,283 where 4,186 records were there. The ledger remembers, per partition, the range
``[start, end)`` it has read and the *gaps* in it (offsets without a visible record: markers
and aborted records), so that the number of visible records in any range it covers is
``(b - a) - gaps within [a, b)``.

Cost: a partition is read once, from where the ledger stops to the new end, and never again
while it only grows (a steady DLQ costs nothing per sample). Memory: one gap per transaction
marker (runs merge), dropped once the range's start moves past them. When the wanted start
falls before what was read (a rewind) or past it (retention deleted it), the partition is
read again from there. Pure: no broker (``streams.lag.fetch`` does the reading).
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from streams.lag.snapshot import TP

__all__ = ["Scan", "SideCounter", "VisibleLedger"]

Scanner = Callable[[Mapping[TP, tuple[int, int]]], Mapping[TP, "Scan"]]


@dataclass
class Scan:
    """What reading ``[start, to)`` of one partition found (``to`` = how far the read got)."""

    start: int
    to: int
    gaps: list[tuple[int, int]] = field(default_factory=list)
    visible: int = 0
    failed: bool = False  # out of range, deleted...: read again from the wanted start


@dataclass
class _Range:
    origin: int  # where reading began; ``total`` counts visible records since then
    start: int
    end: int
    gap_starts: list[int] = field(default_factory=list)
    gap_ends: list[int] = field(default_factory=list)
    gap_sizes: list[int] = field(default_factory=list)  # cumulative: gap_sizes[i] = sum(0..i)
    total: int = 0

    def gap_offsets_below(self, offset: int) -> int:
        """Offsets in gaps below ``offset`` (within the range)."""
        i = bisect.bisect_right(self.gap_starts, offset) - 1
        if i < 0:
            return 0
        before = self.gap_sizes[i - 1] if i > 0 else 0
        return before + min(self.gap_ends[i], offset) - self.gap_starts[i]

    def add_gap(self, start: int, end: int) -> None:
        size = self.gap_sizes[-1] if self.gap_sizes else 0
        if self.gap_ends and self.gap_ends[-1] == start:  # a run: markers after aborted records
            self.gap_ends[-1] = end
            self.gap_sizes[-1] = size + end - start
            return
        self.gap_starts.append(start)
        self.gap_ends.append(end)
        self.gap_sizes.append(size + end - start)

    def trim(self, start: int) -> None:
        """Forget gaps wholly below ``start`` once they are half the list (amortised O(1))."""
        self.start = start
        cut = bisect.bisect_right(self.gap_ends, start)
        if cut and cut * 2 >= len(self.gap_ends):
            dropped = self.gap_sizes[cut - 1]
            del self.gap_starts[:cut], self.gap_ends[:cut]
            self.gap_sizes = [size - dropped for size in self.gap_sizes[cut:]]


class VisibleLedger:
    """Per partition: the range read so far and its gaps; counts visible records in ranges."""

    def __init__(self) -> None:
        self._ranges: dict[TP, _Range] = {}

    def plan(self, tp: TP, start: int, end: int) -> int | None:
        """Where to read from so that ``[start, end)`` is covered; None: nothing to read."""
        known = self._ranges.get(tp)
        if known is None or start < known.start or start > known.end or end < known.end:
            known = self._ranges[tp] = _Range(origin=start, start=start, end=start)
        elif start > known.start:
            known.trim(start)
        return known.end if known.end < end else None

    def record(self, tp: TP, scan: Scan) -> None:
        """Add what a read found; a failed read, or one that does not continue the range, resets."""
        known = self._ranges.get(tp)
        if known is None or scan.failed or scan.start != known.end:
            self._ranges.pop(tp, None)
            return
        for start, end in scan.gaps:
            known.add_gap(start, end)
        known.end = max(known.end, scan.to)
        known.total += scan.visible

    def count(self, tp: TP, start: int, end: int) -> tuple[int, bool]:
        """(visible records in ``[start, end)``, exact?). Offsets not read yet count as records."""
        if end <= start:
            return 0, True
        known = self._ranges.get(tp)
        if known is None or start < known.start or start > known.end:
            return end - start, False
        read_to = min(end, known.end)
        gaps = known.gap_offsets_below(read_to) - known.gap_offsets_below(start)
        return (end - start) - max(0, gaps), read_to == end

    def total(self, tp: TP) -> tuple[int, int] | None:
        """(origin, visible records read since it): a counter that only grows, for inflow."""
        known = self._ranges.get(tp)
        return None if known is None else (known.origin, known.total)


class SideCounter:
    """Visible records of the retry and DLQ partitions, and the DLQ inflow in records/s.

    ``scan`` reads ranges (``KafkaFetcher.scan_visible``); only what the ledger lacks is read.
    The inflow uses reads that reached their end only: a big DLQ read over several samples
    grows as fast as it is read, which is no inflow.
    """

    def __init__(self, scan: Scanner, *, window_s: float, max_points: int) -> None:
        self._scan = scan
        self.window_s = window_s
        self.ledger = VisibleLedger()
        # per partition: (time, origin, visible records read since origin), exact reads only
        self._totals: dict[TP, deque[tuple[float, int, int]]] = {}
        self._max_points = max_points

    def count(self, ranges: Mapping[TP, tuple[int, int]]) -> dict[TP, tuple[int, bool]]:
        """(visible records, exact?) in each range."""
        to_read = {}
        for tp, (start, end) in ranges.items():
            read_from = self.ledger.plan(tp, start, end)
            if read_from is not None:
                to_read[tp] = (read_from, end)
        for tp, scan in self._scan(to_read).items():
            self.ledger.record(tp, scan)
        return {tp: self.ledger.count(tp, *span) for tp, span in ranges.items()}

    def observe(self, tp: TP, now: float, *, exact: bool) -> None:
        """Remember the partition's running total at ``now`` (for ``inflow``)."""
        total = self.ledger.total(tp)
        if total is None or not exact:
            return
        totals = self._totals.setdefault(tp, deque(maxlen=self._max_points))
        totals.append((now, *total))
        while len(totals) > 2 and totals[1][0] < now - 2 * self.window_s:  # noqa: PLR2004
            totals.popleft()

    def inflow(self, tps: Sequence[TP], now: float) -> float | None:
        """Visible records/s added over the window, summed; None before two exact samples."""
        rate, known = 0.0, False
        for tp in tps:
            found = self._totals.get(tp)
            if not found:
                continue
            origin = found[-1][1]  # since the ledger last started this partition again
            points = [p for p in found if p[0] >= now - self.window_s and p[1] == origin]
            if len(points) >= 2 and points[-1][0] > points[0][0]:  # noqa: PLR2004
                rate += (points[-1][2] - points[0][2]) / (points[-1][0] - points[0][0])
                known = True
        return rate if known else None
