"""The lag status evaluator and LagMonitor's bookkeeping, on synthetic histories (no broker)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import replace

import pytest

from streams.config import KafkaSettings
from streams.examples.hello import pipeline as hello
from streams.exceptions import KafkaClientError
from streams.lag import (
    GroupLag,
    GroupMember,
    GroupSnapshot,
    LagMonitor,
    Observation,
    PartitionLag,
    PartitionOffsets,
    Status,
    evaluate_partition,
    worst,
)
from streams.lag.fetch import KafkaFetcher
from streams.lag.status import evaluate_group
from streams.lag.view import stage_view, workers_verdict
from streams.stats import SlotReport, SupervisorReport

WINDOW = 60.0


def _history(points: Sequence[tuple[float, int | None, int]]) -> list[Observation]:
    """(t, committed, LSO) -> observations with lag = LSO - committed."""
    return [Observation(t, c, end, None if c is None else max(0, end - c)) for t, c, end in points]


def _evaluate(
    points: Sequence[tuple[float, int | None, int]], *, owned: bool = False, log_start: int = 0
) -> tuple[Status, str]:
    history = _history(points)
    return evaluate_partition(
        history,
        now=history[-1].t,
        window_s=WINDOW,
        min_samples=3,
        owned=owned,
        log_start=log_start,
    )


def test_stop_when_no_commit_for_the_window_while_lag_and_no_member() -> None:
    status, rule = _evaluate([(t, 100, 150) for t in range(0, 70, 10)])
    assert status is Status.STOP
    assert rule.startswith("STOP: no commit for 60 s while lag > 0")


def test_stall_when_a_live_member_owns_the_partition_but_does_not_move() -> None:
    status, rule = _evaluate([(t, 100, 150) for t in range(0, 70, 10)], owned=True)
    assert status is Status.STALL
    assert "unchanged for 60 s" in rule


def test_no_stop_before_the_window_has_passed() -> None:
    status, _ = _evaluate([(t, 100, 150) for t in range(0, 50, 10)])
    assert status is Status.OK


def test_window_needs_samples_as_well_as_time() -> None:
    # 100 s without a commit, but only two samples: not enough to call it
    assert _evaluate([(0, 100, 150), (100, 100, 150)])[0] is Status.OK
    assert _evaluate([(0, 100, 150), (50, 100, 150), (100, 100, 150)])[0] is Status.STOP


def test_warn_when_lag_grows_over_the_window() -> None:
    status, rule = _evaluate([(t, 10 * t, 12 * t + 5) for t in range(0, 50, 10)])
    assert status is Status.WARN
    assert rule.startswith("WARN: lag grew from 5 to 85")


def test_warn_not_hidden_by_one_zero_lag_commit() -> None:
    # Burrow's rule 1 would call this OK for the whole window (Burrow#745)
    points = [(0, 100, 100), (10, 110, 130), (20, 120, 150), (30, 130, 170), (40, 140, 190)]
    assert _evaluate(points)[0] is Status.WARN


def test_zero_lag_single_commit_does_not_hide_a_stall() -> None:
    # one commit catches up exactly, then nothing moves while records keep arriving
    points = [(0, 50, 100), (10, 100, 100)] + [(t, 100, 100 + t) for t in range(20, 100, 10)]
    status, rule = _evaluate(points, owned=True)
    assert status is Status.STALL
    assert "unchanged for 70 s" in rule


def test_stop_counts_from_when_lag_appeared_not_from_the_last_commit() -> None:
    # caught up and idle for long, then records arrive: growing (WARN) but not yet a stop
    points = [(t, 100, 100) for t in range(0, 300, 10)] + [(300, 100, 120), (310, 100, 130)]
    assert _evaluate(points)[0] is Status.WARN
    assert _evaluate(points, owned=True)[0] is Status.WARN


def test_rewind_when_committed_offset_goes_backwards() -> None:
    status, rule = _evaluate([(0, 500, 600), (10, 550, 600), (20, 100, 600), (30, 150, 600)])
    assert status is Status.REWIND
    assert "went back from 550 to 100" in rule


def test_no_rewind_once_the_consumer_is_past_the_old_offset() -> None:
    points = [(0, 500, 900), (10, 100, 900), (20, 560, 900), (30, 700, 900)]
    assert _evaluate(points)[0] is Status.OK


def test_ok_when_caught_up_or_catching_up() -> None:
    assert _evaluate([(0, 100, 100)])[0] is Status.OK
    status, rule = _evaluate([(0, 0, 100), (10, 40, 110), (20, 80, 120), (30, 110, 125)])
    assert status is Status.OK
    assert rule == "OK: lag 15, not growing"


def test_no_commit_is_ok_and_says_so() -> None:
    assert _evaluate([(0, None, 100)]) == (Status.OK, "OK: no commit (lag unknown)")


def test_data_loss_is_err() -> None:
    status, rule = _evaluate([(0, 10, 100)], log_start=40)
    assert status is Status.ERR
    assert "30 records deleted by retention" in rule


def test_worst_of_order() -> None:
    order = [Status.OK, Status.WARN, Status.STALL, Status.REWIND, Status.STOP, Status.ERR]
    assert [s.severity for s in order] == sorted(s.severity for s in order)
    assert worst([Status.WARN, Status.STOP, Status.STALL]) is Status.STOP
    assert worst([]) is Status.OK


# -- LagMonitor.ingest: history, velocity, time lag, flags, group roll-up --------------------


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _no_reads(keys: Sequence[tuple[str, int, int]]) -> dict[tuple[str, int, int], int | None]:
    return {}


def _ingest(
    monitor: LagMonitor,
    clock: Clock,
    committed: dict[tuple[str, int], int | None],
    offsets: dict[tuple[str, int], tuple[int, int, int]],
    *,
    owned: frozenset[tuple[str, int]] = frozenset(),
    reads: dict[tuple[str, int, int], int | None] | None = None,
) -> GroupLag:
    members = tuple(
        GroupMember(f"m-{n}", "c", "h", assignment=(tp,)) for n, tp in enumerate(sorted(owned))
    )
    info = GroupSnapshot("g", "Empty" if not owned else "Stable", members)
    info.committed.update(committed)
    snapshot = {tp: PartitionOffsets(*values) for tp, values in offsets.items()}
    reader = (
        (lambda keys: {k: v for k, v in (reads or {}).items() if k in keys}) if reads else _no_reads
    )
    (group,) = monitor.ingest(clock(), [info], snapshot, reader)
    return group


def test_no_commit_partition_has_none_not_minus_one() -> None:
    clock = Clock()
    group = _ingest(LagMonitor(clock=clock), clock, {("t", 0): None}, {("t", 0): (0, 50, 50)})
    (p,) = group.partitions
    assert (p.committed, p.lag, p.lag_seconds) == (None, None, None)
    assert p.to_dict()["committed"] is None
    assert group.sum_lag == 0


def test_data_loss_flag_and_group_err() -> None:
    clock = Clock()
    group = _ingest(LagMonitor(clock=clock), clock, {("t", 0): 5}, {("t", 0): (20, 50, 50)})
    assert group.partitions[0].data_loss
    assert group.status is Status.ERR
    assert group.rule.startswith("t[0] ERR:")


def test_lag_is_against_the_lso_and_pending_is_reported() -> None:
    clock = Clock()
    group = _ingest(LagMonitor(clock=clock), clock, {("t", 0): 40}, {("t", 0): (0, 60, 50)})
    (p,) = group.partitions
    assert (p.lag, p.pending_transactional) == (10, 10)


def test_hanging_transaction_after_the_transaction_timeout() -> None:
    clock = Clock()
    monitor = LagMonitor(clock=clock, transaction_timeout_s=30)
    first = _ingest(monitor, clock, {("t", 0): 50}, {("t", 0): (0, 60, 50)})
    assert not first.partitions[0].hanging_transaction
    clock.now += 31
    later = _ingest(monitor, clock, {("t", 0): 50}, {("t", 0): (0, 60, 50)})
    assert later.partitions[0].hanging_transaction
    assert later.status is Status.WARN
    assert "open transaction has held the LSO at 50" in later.rule


def test_trailing_marker_only_gap_reads_as_lag_zero() -> None:
    clock = Clock()
    # committed one below the LSO, and reading from there finds no visible record
    group = _ingest(
        LagMonitor(clock=clock),
        clock,
        {("t", 0): 9},
        {("t", 0): (0, 10, 10)},
        reads={("t", 0, 9): None},
    )
    (p,) = group.partitions
    assert (p.lag, p.lag_seconds, p.status) == (0, 0.0, Status.OK)
    assert "markers or aborted" in p.rule


def test_lag_seconds_read_from_the_record_timestamp() -> None:
    clock = Clock()
    record_ms = int((clock.now - 42) * 1000)
    group = _ingest(
        LagMonitor(clock=clock),
        clock,
        {("t", 0): 5},
        {("t", 0): (0, 10, 10)},
        reads={("t", 0, 5): record_ms},
    )
    (p,) = group.partitions
    assert p.lag_seconds_method == "read"
    assert p.lag_seconds == pytest.approx(42, abs=0.01)
    assert group.max_lag_seconds == pytest.approx(42, abs=0.01)


def test_lag_seconds_interpolated_from_end_offset_history() -> None:
    clock = Clock()
    monitor = LagMonitor(clock=clock)
    for end in (0, 100, 200):  # 10 records/s
        _ingest(monitor, clock, {("t", 0): 0}, {("t", 0): (0, end, end)})
        clock.now += 10
    group = _ingest(monitor, clock, {("t", 0): 150}, {("t", 0): (0, 300, 300)})
    (p,) = group.partitions
    assert p.lag_seconds_method == "interpolated"
    assert p.lag_seconds == pytest.approx(15.0)  # offset 150 arrived at t=15, now t=30


def test_velocity_and_eta_while_catching_up() -> None:
    clock = Clock()
    monitor = LagMonitor(clock=clock)
    for committed in (0, 20, 40, 60):  # lag 100, 80, 60, 40: -2 records/s
        group = _ingest(monitor, clock, {("t", 0): committed}, {("t", 0): (0, 100, 100)})
        clock.now += 10
    (p,) = group.partitions
    assert p.velocity == pytest.approx(-2.0)
    assert p.eta_seconds == pytest.approx(20.0)
    assert p.status is Status.OK


def test_group_status_is_the_worst_partition() -> None:
    clock = Clock()
    monitor = LagMonitor(clock=clock, window_s=30)
    owned = frozenset({("t", 1)})
    for _ in range(4):
        group = _ingest(
            monitor,
            clock,
            {("t", 0): 10, ("t", 1): 10, ("t", 2): 50},
            {("t", 0): (0, 50, 50), ("t", 1): (0, 50, 50), ("t", 2): (0, 50, 50)},
            owned=owned,
        )
        clock.now += 10
    statuses = {p.partition: p.status for p in group.partitions}
    assert statuses == {0: Status.STOP, 1: Status.STALL, 2: Status.OK}
    assert group.status is Status.STOP
    assert group.rule.startswith("t[0] STOP:")
    assert (group.sum_lag, group.max_lag) == (80, 40)
    assert group.to_dict()["status"] == "STOP"


def test_a_request_that_never_answers_fails_with_a_message() -> None:
    """concurrent.futures.TimeoutError() says nothing; the fetcher says which request, where."""
    fetcher = KafkaFetcher(
        KafkaSettings(bootstrap_servers="127.0.0.1:1"), request_timeout_s=0.01, read_timeout_s=0.01
    )
    with pytest.raises(KafkaClientError) as raised:
        fetcher._wait(Future(), "describe consumer groups")
    assert raised.value.message == (
        "cannot describe consumer groups on 127.0.0.1:1: no answer within 0.01 s (TimeoutError)"
    )


def test_group_rules_missing_group_and_no_members_with_lag() -> None:
    ok = (Status.OK, "t[0] OK: lag 6")
    assert evaluate_group(ok, exists=False, members=0, sum_lag=0) == (
        Status.ERR,
        "ERR: group does not exist",
    )
    assert evaluate_group(ok, exists=True, members=0, sum_lag=6) == (
        Status.WARN,
        "WARN: no members, lag 6",
    )
    # controls: a member, or no lag, leaves the partitions' verdict; a worse one is kept
    assert evaluate_group(ok, exists=True, members=1, sum_lag=6) == ok
    assert evaluate_group(ok, exists=True, members=0, sum_lag=0) == ok
    stop = (Status.STOP, "t[0] STOP: no commit for 300 s")
    assert evaluate_group(stop, exists=True, members=0, sum_lag=6) == stop


def test_a_group_known_only_by_hints_does_not_exist() -> None:
    clock = Clock()
    info = GroupSnapshot("g", "Dead")
    info.committed[("t", 0)] = None  # a hinted partition, no commit
    (group,) = LagMonitor(clock=clock).ingest(
        clock(), [info], {("t", 0): PartitionOffsets(0, 5, 5)}, _no_reads
    )
    assert (group.exists, group.status, group.rule) == (
        False,
        Status.ERR,
        "ERR: group does not exist",
    )
    info.committed[("t", 0)] = 5
    (group,) = LagMonitor(clock=clock).ingest(
        clock(), [info], {("t", 0): PartitionOffsets(0, 5, 5)}, _no_reads
    )
    assert (group.exists, group.status) == (True, Status.OK)


def _report(*slots: SlotReport, desired: int | None = None, host: str = "h") -> SupervisorReport:
    running = sum(1 for s in slots if s.state == "running")
    wanted = len(slots) if desired is None else desired
    return SupervisorReport("p.s", wanted, running, slots, ts_ms=0, host=host, pid=1)


UP = SlotReport(0, "running")
DOWN_5 = SlotReport(1, "down", 5, 0, "exited 5 (cannot start)")


def test_a_stage_below_its_desired_workers_is_warn_naming_the_slot() -> None:
    assert workers_verdict([_report(UP, DOWN_5)]) == (
        Status.WARN,
        "WARN: 1 of 2 workers down: slot 1 exited 5 (cannot start)",
        2,
        1,
    )


def test_no_worker_left_is_err_but_a_restarting_one_is_warn() -> None:
    down_0 = SlotReport(0, "down", 3, 0, "exited 3 (stopped on a record)")
    assert workers_verdict([_report(down_0, DOWN_5)]) == (
        Status.ERR,
        (
            "ERR: 2 of 2 workers down: slot 0 exited 3 (stopped on a record); "
            "slot 1 exited 5 (cannot start)"
        ),
        2,
        0,
    )
    restarting = SlotReport(0, "restarting", 1, 2, "exited 1 (crashed), restarting in 4 s")
    status, rule, _, _ = workers_verdict([_report(restarting)]) or (None, "", 0, 0)
    assert (status, rule) == (
        Status.WARN,
        "WARN: 1 of 1 worker down: slot 0 exited 1 (crashed), restarting in 4 s",
    )


def test_all_workers_running_or_a_clean_stop_is_no_alarm() -> None:
    # the controls of the two tests above
    both = SlotReport(1, "running")
    assert workers_verdict([_report(UP, both)]) == (Status.OK, "OK: 2 of 2 workers running", 2, 2)
    stopped = SlotReport(0, "down", 0, 0, "exited 0 (stopped)")
    assert workers_verdict([_report(stopped, desired=0)]) is None
    assert workers_verdict([]) is None


def test_supervisors_of_one_group_on_two_hosts_add_up() -> None:
    verdict = workers_verdict([_report(UP, host="a"), _report(DOWN_5, host="b")])
    assert verdict is not None
    assert verdict[2:] == (2, 1)


def test_the_stage_takes_the_worse_of_lag_and_workers() -> None:
    spec = hello.get("validate")
    group = GroupLag(
        spec.group_id, "Stable", 1, (_lag_row(spec.group_id),), Status.OK, "ok", 0, 0, 0
    )
    warn = stage_view(spec, group, {}, None, [_report(UP, DOWN_5)])
    assert (warn.status, warn.rule, warn.workers_desired, warn.workers_running) == (
        Status.WARN,
        "WARN: 1 of 2 workers down: slot 1 exited 5 (cannot start)",
        2,
        1,
    )
    stopped = replace(group, status=Status.STOP, rule="t[0] STOP: no commit for 300 s")
    assert stage_view(spec, stopped, {}, None, [_report(UP, DOWN_5)]).status is Status.STOP
    ok = stage_view(spec, group, {}, None, [_report(UP, SlotReport(1, "running"))])
    assert (ok.status, ok.rule, ok.workers_running) == (Status.OK, "ok", 2)


def _lag_row(group: str) -> PartitionLag:
    return PartitionLag(
        group=group,
        topic="hello.orders.raw",
        partition=0,
        committed=5,
        log_start=0,
        high_watermark=5,
        last_stable_offset=5,
        lag=0,
        pending_transactional=0,
        lag_seconds=0.0,
        lag_seconds_method=None,
        velocity=None,
        eta_seconds=None,
        status=Status.OK,
        rule="OK: caught up (lag 0)",
        data_loss=False,
        hanging_transaction=False,
    )
