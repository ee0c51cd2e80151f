"""The due times of a retry backlog: which retry records are due now, and which are not yet.

A retry record carries ``streams.due.ms`` (``streams.headers``): a worker pauses the partition
and seeks back until then, so a record that is not due is no work yet. The ledger remembers,
per retry partition, the due time of every visible record in the range ``[start, end)`` it has
read (the backlog: the group's committed offset to the LSO), so that each sample reads only
what was added since the last one; records below a new committed offset are dropped. A record
without the header (or with one that is no number) is due at once, as the worker treats it.

Memory: two integers per record of the backlog (a retry backlog of 100,000 records is a few
MB). A read cut short by its time bound leaves offsets unread: they count as due (work) until
read, which can only overstate the work for a sample. Pure: no broker
(``KafkaFetcher.scan_due`` does the reading).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from streams.lag.snapshot import TP

__all__ = ["DueLedger", "DueScan", "DueSplit"]


@dataclass
class DueScan:
    """What reading ``[start, to)`` of one partition found: (offset, due ms) per visible record."""

    start: int
    to: int
    records: list[tuple[int, int]] = field(default_factory=list)
    failed: bool = False


@dataclass(frozen=True)
class DueSplit:
    """Visible records of a range that are due at a time, those not due yet, and whether the
    whole range was read (unread offsets count as due)."""

    due: int
    not_due: int
    exact: bool


DueScanner = Callable[[Mapping[TP, tuple[int, int]]], Mapping[TP, DueScan]]


@dataclass
class _Dues:
    start: int
    end: int
    offsets: list[int] = field(default_factory=list)
    dues: list[int] = field(default_factory=list)

    def trim(self, start: int) -> None:
        cut = bisect.bisect_left(self.offsets, start)
        if cut:
            del self.offsets[:cut], self.dues[:cut]
        self.start = start


class DueLedger:
    """Per retry partition: the due time of each record read; splits ranges into due/not due."""

    def __init__(self, scan: DueScanner) -> None:
        self._scan = scan
        self._known: dict[TP, _Dues] = {}

    def split(self, ranges: Mapping[TP, tuple[int, int]], now_ms: int) -> dict[TP, DueSplit]:
        """Read what the ledger lacks of each ``[start, end)``, then split each at ``now_ms``."""
        to_read: dict[TP, tuple[int, int]] = {}
        for tp, (start, end) in ranges.items():
            known = self._known.get(tp)
            if known is None or start < known.start or start > known.end or end < known.end:
                known = self._known[tp] = _Dues(start, start)
            elif start > known.start:
                known.trim(start)
            if known.end < end:
                to_read[tp] = (known.end, end)
        for tp, scan in self._scan(to_read).items():
            self._record(tp, scan)
        return {tp: self._split(tp, start, end, now_ms) for tp, (start, end) in ranges.items()}

    def _record(self, tp: TP, scan: DueScan) -> None:
        known = self._known.get(tp)
        if known is None or scan.failed or scan.start != known.end:
            self._known.pop(tp, None)
            return
        for offset, due_ms in scan.records:
            if offset >= known.end:
                known.offsets.append(offset)
                known.dues.append(due_ms)
        known.end = max(known.end, scan.to)

    def _split(self, tp: TP, start: int, end: int, now_ms: int) -> DueSplit:
        if end <= start:
            return DueSplit(0, 0, exact=True)
        known = self._known.get(tp)
        if known is None or known.start != start:
            return DueSplit(end - start, 0, exact=False)
        not_due = sum(1 for due in known.dues if due > now_ms)
        due = len(known.dues) - not_due
        unread = max(0, end - known.end)
        return DueSplit(due + unread, not_due, exact=unread == 0)
