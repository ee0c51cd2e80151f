"""The autoscaling signal's pure parts: the formula, the due ledger, the signal of a sample."""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus

import pytest

from streams.lag import GroupLag, PartitionLag, PipelineView, StageView, Status
from streams.lag.due import DueLedger, DueScan
from streams.lag.scale import suggest_replicas
from streams.lag.snapshot import TP
from streams.observability.scaling import open_breakers, scale_signals
from streams.observability.server import Monitor
from streams.observability.stats_reader import WorkerStats
from streams.pipeline import Pipeline
from streams.retry import RetryPolicy
from tests.unit.test_exporter import Clock, FakeLag, FakeStats


def test_lag_divided_by_records_per_replica_capped_by_partitions() -> None:
    assert (
        suggest_replicas(
            lag=2500, retry_due=0, partitions=8, current_replicas=1, breaker_open=False
        )[0]
        == 3
    )
    suggested, why = suggest_replicas(
        lag=50_000, retry_due=0, partitions=8, current_replicas=1, breaker_open=False
    )
    assert suggested == 8
    assert "capped at 8 input partitions" in why


def test_due_retries_are_work_and_a_small_backlog_still_needs_one() -> None:
    assert (
        suggest_replicas(
            lag=0, retry_due=3001, partitions=8, current_replicas=1, breaker_open=False
        )[0]
        == 4
    )
    assert (
        suggest_replicas(lag=1, retry_due=0, partitions=8, current_replicas=0, breaker_open=False)[
            0
        ]
        == 1
    )


def test_idle_is_one_never_zero() -> None:
    suggested, why = suggest_replicas(
        lag=0, retry_due=0, partitions=8, current_replicas=4, breaker_open=False
    )
    assert suggested == 1
    assert "no scale to zero" in why


def test_an_open_breaker_holds_scale_out_but_not_scale_in() -> None:
    held, why = suggest_replicas(
        lag=8000, retry_due=0, partitions=8, current_replicas=2, breaker_open=True
    )
    assert held == 2
    assert "held at 2" in why
    # control: the same work with the breaker closed scales out
    assert (
        suggest_replicas(
            lag=8000, retry_due=0, partitions=8, current_replicas=2, breaker_open=False
        )[0]
        == 8
    )
    # scale-in goes on: the lag falls while records are parked in the retry topics
    assert (
        suggest_replicas(lag=500, retry_due=0, partitions=8, current_replicas=6, breaker_open=True)[
            0
        ]
        == 1
    )
    # no replica at all: one starts, breaker or not
    assert (
        suggest_replicas(
            lag=8000, retry_due=0, partitions=8, current_replicas=0, breaker_open=True
        )[0]
        == 1
    )


def test_records_per_replica_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        suggest_replicas(
            lag=1,
            retry_due=0,
            partitions=1,
            current_replicas=1,
            breaker_open=False,
            records_per_replica=0,
        )


class FakeDueScanner:
    """Partition ("r", 0): offsets 0..99, record n due at n * 1000 ms, marker at every 10th."""

    def __init__(self) -> None:
        self.reads: list[tuple[int, int]] = []
        self.stop_at: int | None = None

    def __call__(self, ranges: Mapping[TP, tuple[int, int]]) -> dict[TP, DueScan]:
        found = {}
        for tp, (start, end) in ranges.items():
            self.reads.append((start, end))
            to = min(end, self.stop_at) if self.stop_at is not None else end
            records = [(n, n * 1000) for n in range(start, to) if n % 10 != 9]
            found[tp] = DueScan(start, to, records)
        return found


def test_the_due_ledger_splits_reads_only_what_is_new_and_trims() -> None:
    scanner = FakeDueScanner()
    ledger = DueLedger(scanner)
    tp = ("r", 0)
    split = ledger.split({tp: (0, 50)}, now_ms=20_000)[tp]
    # records 0..20 are due (21, less the marker at 9 and 19), 21..49 not (less 29, 39, 49)
    assert (split.due, split.not_due, split.exact) == (19, 26, True)
    split = ledger.split({tp: (30, 60)}, now_ms=20_000)[tp]
    assert scanner.reads == [(0, 50), (50, 60)]  # only the new offsets are read
    assert (split.due, split.not_due) == (0, 27)
    later = ledger.split({tp: (30, 60)}, now_ms=100_000)[tp]
    assert (later.due, later.not_due) == (27, 0)
    assert scanner.reads == [(0, 50), (50, 60)]


def test_unread_offsets_count_as_due_until_read() -> None:
    scanner = FakeDueScanner()
    scanner.stop_at = 40
    ledger = DueLedger(scanner)
    split = ledger.split({("r", 0): (30, 60)}, now_ms=0)[("r", 0)]
    assert (split.due, split.not_due, split.exact) == (20, 9, False)
    scanner.stop_at = None
    split = ledger.split({("r", 0): (30, 60)}, now_ms=0)[("r", 0)]
    assert (split.due, split.not_due, split.exact) == (0, 27, True)


def test_a_rewind_reads_again() -> None:
    scanner = FakeDueScanner()
    ledger = DueLedger(scanner)
    ledger.split({("r", 0): (30, 60)}, now_ms=0)
    split = ledger.split({("r", 0): (10, 60)}, now_ms=0)[("r", 0)]
    assert scanner.reads[-1] == (10, 60)
    assert split.not_due == 45


def _lag_partition(topic: str, partition: int, committed: int | None, lso: int) -> PartitionLag:
    return PartitionLag(
        group="p.s",
        topic=topic,
        partition=partition,
        committed=committed,
        log_start=5,
        high_watermark=lso + 3,
        last_stable_offset=lso,
        lag=None if committed is None else lso - committed,
        pending_transactional=3,
        lag_seconds=None,
        lag_seconds_method=None,
        velocity=None,
        eta_seconds=None,
        status=Status.OK,
        rule="test",
        data_loss=False,
        hanging_transaction=False,
    )


def _worker(state: str, group: str = "p.s") -> WorkerStats:
    return WorkerStats(group, "0", 0, {}, ({"name": "pricing", "state": state},))


def test_the_signal_of_a_sample() -> None:
    pipeline = Pipeline("p", partitions=4)
    pipeline.add_stage("s", lambda r: r.value, inputs=["in"], outputs=["out"])
    parts = (
        _lag_partition("in", 0, 100, 700),
        _lag_partition("in", 1, None, 905),  # no commit: LSO - log start
        _lag_partition("in", 2, 10, 10),
        _lag_partition("p.s.retry.1s", 0, 0, 10_000),  # not input lag
    )
    group = GroupLag("p.s", "Stable", 2, parts, Status.OK, "ok", 0, 0, None)
    view = PipelineView(
        "p",
        (
            StageView(
                "p.s", 600, None, {}, 0, None, Status.OK, "ok", retry_due=50, retry_not_due=1000
            ),
        ),
        None,
    )
    signal = scale_signals(
        [pipeline], {"p.s": group}, [view], [_worker("open")], records_per_replica=500
    )["p.s"]
    assert signal.lag == 600 + 900
    assert (signal.retry_due, signal.retry_not_due, signal.partitions) == (50, 1000, 3)
    assert signal.current_replicas == 2
    assert signal.breaker_open
    assert signal.suggested_replicas == 2  # 1550 / 500 = 4, capped at 3, held at 2
    assert "pricing" in signal.reason
    closed = scale_signals(
        [pipeline], {"p.s": group}, [view], [_worker("closed")], records_per_replica=500
    )["p.s"]
    assert (closed.breaker_open, closed.suggested_replicas) == (False, 3)


def test_breakers_of_other_groups_do_not_count() -> None:
    workers = [_worker("open", "q.t"), _worker("half_open"), _worker("closed")]
    assert open_breakers(workers, "p.s") == ["pricing"]
    assert open_breakers(workers, "x.y") == []


def test_api_scale_answers_404_for_an_unknown_group_and_503_after_a_failed_sample() -> None:
    from streams.examples.hello import pipeline as hello  # noqa: PLC0415 - the fakes' pipeline

    lag, clock = FakeLag(), Clock()
    monitor = Monitor([hello], lag=lag, stats=FakeStats(), clock=clock, interval_s=3600)
    try:
        monitor.sample_once()
        status, body = monitor.scale("hello.validate")
        assert status is HTTPStatus.OK
        answer = json.loads(body)
        assert set(answer) == {
            "group",
            "lag",
            "retry_due",
            "retry_not_due",
            "partitions",
            "breaker_open",
            "current_replicas",
            "suggested_replicas",
            "reason",
        }
        assert answer["lag"] == 90
        status, body = monitor.scale("nobody.here")
        assert status is HTTPStatus.NOT_FOUND
        assert "hello.validate" in json.loads(body)["groups"]
        lag.fail = TimeoutError()
        monitor.sample_once()
        status, body = monitor.scale("hello.validate")
        assert status is HTTPStatus.SERVICE_UNAVAILABLE
        failed = json.loads(body)
        assert failed["error"].startswith("the last sample failed: TimeoutError")
        assert failed["lag"] == 90  # the last known values stay for a person to read
    finally:
        monitor.close()


def test_retry_topics_of_a_stage_are_no_input() -> None:
    pipeline = Pipeline("p", partitions=2)
    pipeline.add_stage(
        "s",
        lambda r: r.value,
        inputs=["in"],
        outputs=["out"],
        retry=RetryPolicy(tiers=(1.0,)),
    )
    retry = pipeline.component("s").retry_topics[0]
    parts = (_lag_partition("in", 0, 10, 10), _lag_partition(retry, 0, 0, 5000))
    group = GroupLag("p.s", "Stable", 1, parts, Status.OK, "ok", 0, 0, None)
    signal = scale_signals([pipeline], {"p.s": group}, [], [], records_per_replica=1)["p.s"]
    assert (signal.lag, signal.suggested_replicas) == (0, 1)


def test_one_pipeline_s_split_keeps_what_another_read() -> None:
    """The monitor splits each pipeline's retry partitions in a call of its own."""
    scanner = FakeDueScanner()
    ledger = DueLedger(scanner)
    ledger.split({("a", 0): (0, 50)}, now_ms=0)
    ledger.split({("b", 0): (0, 50)}, now_ms=0)
    split = ledger.split({("a", 0): (0, 50)}, now_ms=0)[("a", 0)]
    assert scanner.reads == [(0, 50), (0, 50)]
    assert split.not_due == 44  # 1..49 less the markers at 9, 19, ...; 0 is due at 0
