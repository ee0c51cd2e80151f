"""Replay marks in the lag view: which status a task explains, where the mark shows (no broker)."""
# ruff: noqa: ARG002 - the fake fetcher keeps the signatures of the real KafkaFetcher

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.cli import lag as lag_cli
from streams.examples.hello import pipeline as hello
from streams.lag import (
    GroupLag,
    GroupSnapshot,
    LagMonitor,
    PartitionOffsets,
    ReplayMark,
    Status,
)
from streams.lag.marks import explain, explains
from streams.lag.snapshot import TP
from streams.lag.view import stage_view
from streams.observability.exporter import MetricsExporter, Snapshot

T0 = 1_700_000_000.0
NOW_MS = round(T0 * 1000)
RESET = ReplayMark(
    task="reset-20231114-221320-ab12",
    kind="reset",
    status="COMPLETED",
    moved=0,
    to_move=0,
    started_ms=NOW_MS - 120_000,
    updated_ms=NOW_MS - 120_000,
    until_ms=NOW_MS - 120_000 + 600_000,
)
REDRIVE = ReplayMark(
    task="redrive-20231114-221320-cd34",
    kind="redrive",
    status="RUNNING",
    moved=700,
    to_move=10_000,
    started_ms=NOW_MS - 30_000,
    updated_ms=NOW_MS - 1_000,
)


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _no_reads(keys: Sequence[tuple[str, int, int]]) -> dict[tuple[str, int, int], int | None]:
    return {}


def _sample(
    monitor: LagMonitor,
    clock: Clock,
    committed: int,
    marks: Mapping[str, Sequence[ReplayMark]],
    *,
    group: str = "g",
    end: int = 100,
) -> GroupLag:
    info = GroupSnapshot(group, "Empty")
    info.committed[("t", 0)] = committed
    (found,) = monitor.ingest(
        clock(), [info], {("t", 0): PartitionOffsets(0, end, end)}, _no_reads, replay=marks
    )
    return found


def test_mark_descriptions_name_the_task_and_its_progress() -> None:
    described = RESET.describe(NOW_MS)
    assert described == "reset task reset-20231114-221320-ab12, 2 min ago, 10 min window"
    assert REDRIVE.describe(NOW_MS) == "redrive task redrive-20231114-221320-cd34: 700/10,000 moved"
    stopped = replace(REDRIVE, status="INTERRUPTED")
    assert stopped.describe(NOW_MS).endswith("700/10,000 moved, INTERRUPTED")
    recent = replace(RESET, started_ms=NOW_MS - 5_000).describe(NOW_MS)
    assert recent.startswith("reset task reset-20231114-221320-ab12, 5 s ago")


@pytest.mark.parametrize(
    ("status", "lag", "mark", "explained"),
    [
        (Status.REWIND, 40, RESET, True),
        (Status.REWIND, 40, REDRIVE, False),  # a redrive adds records, it never rewinds
        (Status.WARN, 40, REDRIVE, True),
        (Status.WARN, 40, RESET, True),
        (Status.OK, 40, REDRIVE, True),
        (Status.OK, 0, REDRIVE, False),  # nothing to explain
        (Status.STALL, 40, REDRIVE, False),
        (Status.STOP, 40, RESET, False),
        (Status.ERR, 40, RESET, False),
    ],
)
def test_which_status_a_task_explains(
    status: Status, lag: int, mark: ReplayMark, explained: bool
) -> None:
    assert explains(mark, status, lag) is explained
    text = explain(status, lag, [mark], NOW_MS)
    assert (text == mark.describe(NOW_MS)) if explained else text is None


def test_a_rewind_after_a_reset_keeps_its_status_and_is_explained_by_the_reset() -> None:
    clock = Clock()
    monitor = LagMonitor(clock=clock, window_s=60, min_samples=2)
    before = _sample(monitor, clock, 90, {})
    assert (before.replay, before.explained_by) == ((), None)
    clock.now += 5
    marks = {"g": [RESET, REDRIVE]}
    rewound = _sample(monitor, clock, 10, marks)
    assert rewound.status is Status.REWIND
    assert "REWIND: committed offset went back from 90 to 10" in rewound.rule
    assert rewound.replay == (RESET, REDRIVE)
    assert rewound.explained_by == RESET.describe(round(clock.now * 1000))
    (partition,) = rewound.partitions
    assert partition.status is Status.REWIND
    assert partition.explained_by == rewound.explained_by
    as_dict = rewound.to_dict()
    assert as_dict["status"] == "REWIND"
    assert [m["task"] for m in as_dict["replay"]] == [RESET.task, REDRIVE.task]
    assert as_dict["explained_by"] == rewound.explained_by


def test_a_redrive_does_not_explain_a_rewind_but_is_still_shown() -> None:
    clock = Clock()
    monitor = LagMonitor(clock=clock, window_s=60, min_samples=2)
    _sample(monitor, clock, 90, {})
    clock.now += 5
    rewound = _sample(monitor, clock, 10, {"g": [REDRIVE]})
    assert (rewound.status, rewound.replay, rewound.explained_by) == (
        Status.REWIND,
        (REDRIVE,),
        None,
    )


def test_no_members_with_lag_after_a_reset_is_explained_and_other_groups_are_not_marked() -> None:
    clock = Clock()
    monitor = LagMonitor(clock=clock)
    marks = {"g": [RESET]}
    reset = _sample(monitor, clock, 10, marks)
    assert (reset.status, reset.rule) == (Status.WARN, "WARN: no members, lag 90")
    assert reset.explained_by is not None
    assert reset.explained_by.startswith("reset task")
    control = _sample(monitor, clock, 10, marks, group="other")
    assert (control.status, control.replay, control.explained_by) == (Status.WARN, (), None)
    assert control.partitions[0].explained_by is None


def test_stop_is_never_explained() -> None:
    clock = Clock()
    monitor = LagMonitor(clock=clock, window_s=10, min_samples=2)
    for _ in range(4):
        stopped = _sample(monitor, clock, 10, {"g": [RESET]})
        clock.now += 5
    assert (stopped.status, stopped.replay, stopped.explained_by) == (Status.STOP, (RESET,), None)


class _FakeFetcher:
    """The requests ``LagMonitor.sample`` makes, answered from memory: ``groups`` groups of
    ``partitions`` partitions each, all committed at 10 of 100."""

    def __init__(self, groups: int, partitions: int) -> None:
        self.groups = [f"g{n}" for n in range(groups)]
        self.partitions = partitions

    def partition_counts(self) -> dict[str, int]:
        return {"t": self.partitions}

    def list_groups(self) -> list[str]:
        return list(self.groups)

    def describe(self, groups: Iterable[str]) -> list[GroupSnapshot]:
        return [GroupSnapshot(g, "Empty") for g in groups]

    def fetch_committed(self, infos: Iterable[GroupSnapshot]) -> None:
        for info in infos:
            info.committed.update({("t", p): 10 for p in range(self.partitions)})

    def list_offsets(self, wanted: Iterable[TP]) -> dict[TP, PartitionOffsets]:
        return {tp: PartitionOffsets(0, 100, 100) for tp in wanted}

    def read_timestamps(
        self, keys: Sequence[tuple[str, int, int]]
    ) -> dict[tuple[str, int, int], int | None]:
        return {}

    def reconnect(self) -> None: ...

    def close(self) -> None: ...


class _CountingSource:
    def __init__(self, marks: Mapping[str, Sequence[ReplayMark]]) -> None:
        self._marks = marks
        self.asked: list[int] = []
        self.reconnected = 0
        self.closed = 0

    def marks(self, now_ms: int) -> Mapping[str, Sequence[ReplayMark]]:
        self.asked.append(now_ms)
        return self._marks

    def reconnect(self) -> None:
        self.reconnected += 1

    def close(self) -> None:
        self.closed += 1


def test_the_ledger_is_asked_once_per_sample_not_per_group() -> None:
    clock = Clock()
    source = _CountingSource({"g3": [REDRIVE]})
    monitor = LagMonitor(clock=clock, replay=source)
    monitor._fetch = _FakeFetcher(groups=200, partitions=5)  # type: ignore[assignment]
    sampled = monitor.sample()
    assert source.asked == [NOW_MS]
    marked = {g.group: g.explained_by for g in sampled if g.replay}
    assert marked == {"g3": REDRIVE.describe(NOW_MS)}  # lag 90 and no members: WARN
    monitor.sample()
    assert len(source.asked) == 2
    monitor.reconnect()
    monitor.close()
    assert (source.reconnected, source.closed) == (1, 1)


def test_without_a_source_nothing_is_marked() -> None:
    monitor = LagMonitor(clock=Clock())
    monitor._fetch = _FakeFetcher(groups=3, partitions=2)  # type: ignore[assignment]
    assert all(g.replay == () and g.explained_by is None for g in monitor.sample())


def test_a_stage_keeps_its_groups_explanation_only_while_its_status_is_the_groups() -> None:
    clock = Clock()
    spec = hello.get("validate")
    info = GroupSnapshot(spec.group_id, "Empty")
    info.committed[(spec.inputs[0], 0)] = 10
    (group,) = LagMonitor(clock=clock).ingest(
        clock(),
        [info],
        {(spec.inputs[0], 0): PartitionOffsets(0, 100, 100)},
        _no_reads,
        replay={spec.group_id: [RESET]},
    )
    view = stage_view(spec, group, {}, None)
    assert (view.status, view.replay, view.explained_by) == (
        Status.WARN,
        (RESET,),
        group.explained_by,
    )
    assert view.to_dict()["replay"][0]["task"] == RESET.task
    ok = replace(group, status=Status.OK, rule="ok", explained_by=None)
    inflow = stage_view(spec, ok, {}, 2.5)  # the DLQ grows: not the reset's doing
    assert inflow.status is Status.WARN
    assert inflow.explained_by is None
    assert inflow.replay == (RESET,)


def test_table_marks_the_explained_status_and_names_a_task_that_explains_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = Clock()
    monitor = LagMonitor(clock=clock, window_s=60, min_samples=2)
    _sample(monitor, clock, 90, {})
    clock.now += 5
    rewound = _sample(monitor, clock, 10, {"g": [RESET, REDRIVE]})
    lag_cli._print_table([rewound], colour=False)
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("g "))
    assert "REWIND (reset task reset-20231114-221320-ab12, 2 min ago, 10 min window)" in row
    assert "  explained by reset task reset-20231114-221320-ab12" in out
    assert (
        "  replay redrive task redrive-20231114-221320-cd34: 700/10,000 moved "
        "(does not explain REWIND)"
    ) in out
    # an explained REWIND does not fail the check; one with no reset behind it does
    assert not lag_cli._failing(rewound.status, rewound.explained_by)
    assert lag_cli._failing(Status.REWIND, None)
    assert lag_cli._failing(Status.STOP, None)
    partition = lag_cli._partition_dict(rewound, rewound.partitions[0])
    assert [m["task"] for m in partition["replay"]] == [RESET.task, REDRIVE.task]
    assert partition["explained_by"] == rewound.explained_by


def test_exporter_sets_replay_active_per_group_and_kind() -> None:
    clock = Clock()
    monitor = LagMonitor(clock=clock)
    marked = _sample(monitor, clock, 10, {"g": [RESET, REDRIVE, replace(REDRIVE, task="x")]})
    control = _sample(monitor, clock, 10, {}, group="other")
    snapshot = Snapshot(T0, "c1", (marked, control), (), ())
    body = MetricsExporter(lambda: snapshot).render().decode()
    (family,) = [
        f for f in text_string_to_metric_families(body) if f.name == "streams_group_replay_active"
    ]
    assert {(s.labels["group"], s.labels["kind"], s.value) for s in family.samples} == {
        ("g", "redrive", 1.0),
        ("g", "reset", 1.0),
    }
