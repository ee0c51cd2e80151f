"""The ledger of visible records behind the DLQ depth and retry backlog (no broker)."""

from __future__ import annotations

from collections.abc import Mapping

from streams.lag.visible import Scan, SideCounter, VisibleLedger

TP = ("dlq", 0)


def _scan(start: int, to: int, visible_offsets: list[int]) -> Scan:
    """What a read_committed read of [start, to) returns when it sees these offsets."""
    scan, previous = Scan(start, to), start
    for offset in visible_offsets:
        if offset > previous:
            scan.gaps.append((previous, offset))
        previous = offset + 1
        scan.visible += 1
    if to > previous:
        scan.gaps.append((previous, to))
    return scan


def test_markers_between_transactions_are_not_counted() -> None:
    # three transactions of 3 records, each followed by its commit marker: offsets 0..11
    visible = [0, 1, 2, 4, 5, 6, 8, 9, 10]
    ledger = VisibleLedger()
    assert ledger.plan(TP, 0, 12) == 0
    ledger.record(TP, _scan(0, 12, visible))
    assert ledger.count(TP, 0, 12) == (9, True)
    assert ledger.count(TP, 5, 12) == (5, True)  # 5, 6, 8, 9, 10
    assert ledger.count(TP, 3, 4) == (0, True)  # the first marker alone


def test_a_steady_range_is_not_read_again_and_growth_is_read_incrementally() -> None:
    ledger = VisibleLedger()
    assert ledger.plan(TP, 0, 4) == 0
    ledger.record(TP, _scan(0, 4, [0, 1, 2]))
    assert ledger.plan(TP, 0, 4) is None  # nothing new: no read
    assert ledger.plan(TP, 0, 8) == 4  # only the new range
    ledger.record(TP, _scan(4, 8, [4, 5, 6]))
    assert ledger.count(TP, 0, 8) == (6, True)
    assert ledger.total(TP) == (0, 6)


def test_an_aborted_run_and_its_marker_merge_into_one_gap() -> None:
    ledger = VisibleLedger()
    ledger.plan(TP, 0, 10)
    # 0-1 committed, marker 2, 3-6 aborted, marker 7, 8 committed, marker 9
    scan = _scan(0, 10, [0, 1, 8])
    assert scan.gaps == [(2, 8), (9, 10)]
    ledger.record(TP, scan)
    assert ledger.count(TP, 0, 10) == (3, True)


def test_unread_offsets_count_as_records_and_say_so() -> None:
    ledger = VisibleLedger()
    ledger.plan(TP, 0, 100)
    ledger.record(TP, _scan(0, 10, [0, 1, 2, 4, 5, 6, 8]))  # the read ran out of time at 10
    assert ledger.count(TP, 0, 100) == (7 + 90, False)
    assert ledger.plan(TP, 0, 100) == 10


def test_retention_or_a_rewind_starts_the_range_again() -> None:
    ledger = VisibleLedger()
    ledger.plan(TP, 0, 12)
    ledger.record(TP, _scan(0, 12, [0, 1, 2, 4, 5, 6, 8, 9, 10]))
    assert ledger.plan(TP, 4, 12) is None  # the start moved forward inside the range: no read
    assert ledger.count(TP, 4, 12) == (6, True)
    assert ledger.plan(TP, 2, 12) == 2  # back before the range: read again from there
    assert ledger.plan(TP, 40, 50) == 40  # past the range (retention): read again
    assert ledger.count(TP, 40, 50) == (10, False)


def test_trimming_old_gaps_keeps_the_counts() -> None:
    ledger = VisibleLedger()
    ledger.plan(TP, 0, 400)
    # 100 transactions of 3 records and a marker
    visible = [o for o in range(400) if o % 4 != 3]
    ledger.record(TP, _scan(0, 400, visible))
    for start in range(0, 400, 8):
        ledger.plan(TP, start, 400)
        assert ledger.count(TP, start, 400) == (3 * (400 - start) // 4, True)


def test_a_failed_or_out_of_order_read_resets_the_partition() -> None:
    ledger = VisibleLedger()
    ledger.plan(TP, 0, 10)
    ledger.record(TP, Scan(0, 0, failed=True))
    assert ledger.total(TP) is None
    assert ledger.plan(TP, 0, 10) == 0
    ledger.record(TP, _scan(5, 10, [5]))  # does not continue the range: ignored, reset
    assert ledger.count(TP, 0, 10) == (10, False)


def test_inflow_counts_records_and_ignores_a_read_still_catching_up() -> None:
    log = [o for o in range(1000) if o % 4 != 3]  # transactions of 3 records and a marker

    def scan(ranges: Mapping[tuple[str, int], tuple[int, int]]) -> dict[tuple[str, int], Scan]:
        # reads at most 100 offsets per call, as a read cut short by its time budget
        found = {}
        for tp, (start, end) in ranges.items():
            to = min(end, start + 100)
            found[tp] = _scan(start, to, [o for o in log if start <= o < to])
        return found

    side = SideCounter(scan, window_s=60, max_points=100)
    for t in range(5):  # a backlog of 400 offsets, read 100 per sample
        (count,) = side.count({TP: (0, 400)}).values()
        side.observe(TP, float(t), exact=count[1])
    assert count == (300, True)
    # exact from t=3 on: the 300 records found while catching up are no inflow (75/s)
    assert side.inflow([TP], 4.0) == 0.0
    side.count({TP: (0, 440)})  # 10 s later: 40 more offsets, 30 records
    side.observe(TP, 14.0, exact=True)
    assert side.inflow([TP], 14.0) == 30 / 11  # from the first exact sample (t=3) to t=14
