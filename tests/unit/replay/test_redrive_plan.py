"""The pure parts of planning and running: --max-records cuts, the rate limiter, reset input."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.exceptions import BadArgumentError
from streams.replay.mover import RateLimiter
from streams.replay.plan import PartitionPlan
from streams.replay.redrive import _cut
from streams.replay.reset import ResetRequest, ResetRow, _target, parse_scope, read_plan_file


def test_cut_takes_exactly_the_oldest_moves_as_a_prefix_of_each_partition() -> None:
    ranges = {0: (0, 100), 1: (0, 100), 2: (0, 100)}
    kept = {
        0: [(10, 3), (40, 4), (50, 9)],
        1: [(20, 0), (30, 1), (35, 2), (60, 3)],
        2: [],
    }
    # the four oldest: 10 (p0@3), 20 (p1@0), 30 (p1@1), 35 (p1@2)
    assert _cut(ranges, kept, 4) == {0: (0, 4), 1: (0, 3), 2: (0, 100)}
    assert _cut(ranges, kept, 0) == {0: (0, 3), 1: (0, 0), 2: (0, 100)}
    assert _cut(ranges, kept, 100) == ranges


def test_partition_plan_counts_moves_and_skips_and_the_selected_span() -> None:
    part = PartitionPlan(0, 0, 10)
    for offset, found in ((1, None), (2, "move"), (3, "unroutable"), (4, "move")):
        part.note(offset, found)
    assert (part.selected, part.to_move, dict(part.skipped)) == (3, 2, {"unroutable": 1})
    assert (part.first, part.last) == (2, 4)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_rate_limiter_holds_the_rate_over_a_long_run() -> None:
    clock = Clock()
    limiter = RateLimiter(1000, clock=clock)
    for _ in range(5000):
        limiter.take(sleep=clock.sleep)
    assert clock.now == pytest.approx(5.0, rel=0.01)


def test_rate_limiter_bursts_at_most_50_ms_worth() -> None:
    clock = Clock()
    limiter = RateLimiter(1000, clock=clock)
    clock.now = 10.0  # idle for a long time
    assert limiter.available() == 50
    assert RateLimiter(5, clock=clock).available() == 1


def test_parse_scope_topics_and_partitions() -> None:
    assert parse_scope(["a", "b:0,2"]) == {"a": None, "b": (0, 2)}
    with pytest.raises(BadArgumentError):
        parse_scope(["b:x"])


def test_read_plan_file_reads_both_export_forms(tmp_path: Path) -> None:
    plan = tmp_path / "plan.csv"
    plan.write_text("t,0,5\n# a comment\ng,t,1,7\nother,t,2,9\n")
    assert read_plan_file(plan, "g") == (("t", 0, 5), ("t", 1, 7))
    plan.write_text("t,zero,5\n")
    with pytest.raises(BadArgumentError, match=r"plan\.csv:1"):
        read_plan_file(plan, "g")


def row(current: int | None = 40, role: str = "input") -> ResetRow:
    return ResetRow("t", 0, current, log_start=10, end=100, new=0, role=role)


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (ResetRequest("earliest"), 10),
        (ResetRequest("latest"), 100),
        (ResetRequest("offset", 55), 55),
        (ResetRequest("shift", -15), 25),
        (ResetRequest("shift", 500), 540),  # clamped by the caller
    ],
)
def test_reset_targets(request_: ResetRequest, expected: int) -> None:
    assert _target(row(), request_, None) == expected


def test_reset_shift_without_a_commit_fails_and_retry_topics_can_go_to_the_end() -> None:
    with pytest.raises(BadArgumentError, match="no committed offset"):
        _target(row(current=None), ResetRequest("shift", 1), None)
    retry = row(role="retry")
    assert _target(retry, ResetRequest("earliest", retry_topics="end"), None) == 100
    assert retry.note == "retry topic: to its end"


def test_reset_to_a_time_after_the_last_record_falls_back_to_the_end_and_says_so() -> None:
    found = row()
    assert _target(found, ResetRequest("datetime", 5), {0: 100}) == 100
    assert found.note == "no record at or after the time: the end"
