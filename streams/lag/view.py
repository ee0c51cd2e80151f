"""The pipeline view: per stage its input lag, retry backlog and DLQ, and the end-to-end lag.

The retry backlog and the DLQ depth count *records*, as a read_committed consumer sees them,
not offsets: transaction markers and aborted records are left out (``streams.lag.visible``).

Every component spec has the same shape (``kind``, ``inputs``, ``outputs``, ``retry_topics``,
``dlq_topic``: None for a sink, ``lag_topics``), so nothing here asks which kind it holds. The
topics a group's view lists before any commit come from ``lag_hints`` alone: the monitor, the
CLI and ``LagMonitor.pipeline_view`` all ask it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from streams.lag.due import DueSplit
from streams.lag.marks import ReplayMark
from streams.lag.snapshot import TP, GroupLag, PartitionOffsets
from streams.lag.status import Status
from streams.pipeline import Pipeline
from streams.spec import Component
from streams.stats import SupervisorReport

__all__ = [
    "PipelineView",
    "StageView",
    "StateProgress",
    "end_to_end",
    "lag_hints",
    "side_ranges",
    "side_topics",
    "stage_view",
    "workers_verdict",
]


@dataclass(frozen=True)
class StateProgress:
    """An aggregate's state as its live workers report it in their stats: keys held, and the
    restore in progress (changelog records restored of the offsets to restore)."""

    keys: int = 0
    restoring: bool = False
    restored: int = 0
    to_restore: int = 0

    @classmethod
    def of(cls, counters: Iterable[Mapping[str, float]]) -> StateProgress:
        """Summed over the workers' counters (``state_keys``, ``restoring``, ``restore_*``)."""
        found = list(counters)
        return cls(
            keys=int(sum(c.get("state_keys", 0) for c in found)),
            restoring=any(c.get("restoring", 0) for c in found),
            restored=int(sum(c.get("restore_restored", 0) for c in found)),
            to_restore=int(sum(c.get("restore_to_restore", 0) for c in found)),
        )


@dataclass(frozen=True)
class StageView:
    """One stage (or sink) of a pipeline: input lag, retry backlog and dead-letter topic."""

    group: str
    input_lag: int
    input_lag_seconds: float | None
    retry_backlog: dict[str, int]
    dlq_depth: int
    dlq_inflow_per_s: float | None
    status: Status
    rule: str
    # False while a retry or DLQ partition has not been read to its end yet (a big DLQ takes
    # a few samples): its unread offsets are counted as records meanwhile
    counts_exact: bool = True
    # from the live supervisors' records (None: no supervisor reports this group)
    workers_desired: int | None = None
    workers_running: int | None = None
    # the retry backlog split by the records' streams.due.ms at the sample (streams.lag.due)
    retry_due: int = 0
    retry_not_due: int = 0
    # an aggregate's changelog (empty for other stages), and its state from the workers' stats
    # (None: no live worker reports it)
    state_topics: tuple[str, ...] = ()
    state: StateProgress | None = None
    # the replay tasks affecting the stage's group, and those that explain its status (the
    # group's explanation, kept while the stage's status is the group's; streams.lag.marks)
    replay: tuple[ReplayMark, ...] = ()
    explained_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = str(self.status)
        return data


@dataclass(frozen=True)
class PipelineView:
    """Every stage of a pipeline, and the end-to-end lag along its longest path."""

    pipeline: str
    stages: tuple[StageView, ...]
    end_to_end_lag_seconds: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "stages": [stage.to_dict() for stage in self.stages],
            "end_to_end_lag_seconds": self.end_to_end_lag_seconds,
        }


def lag_hints(*pipelines: Pipeline) -> dict[str, list[str]]:
    """group -> the topics whose partitions its lag lists even before a commit."""
    return {c.group_id: list(c.lag_topics) for p in pipelines for c in p.stages}


def side_topics(pipeline: Pipeline) -> set[str]:
    """The retry and dead-letter topics of every component (a sink has none)."""
    topics: set[str] = set()
    for component in pipeline.stages:
        topics.update(component.retry_topics)
        if component.dlq_topic is not None:
            topics.add(component.dlq_topic)
    return topics


def side_ranges(
    stage: Component, group: GroupLag | None, extra: Mapping[TP, PartitionOffsets]
) -> dict[TP, tuple[int, int]]:
    """The offset ranges whose visible records are the stage's retry backlog and DLQ depth.

    A retry partition: from the group's committed offset (or the log start, without a commit)
    to the LSO; a dead-letter partition: from the log start to the LSO.
    """
    committed = {(p.topic, p.partition): p.committed for p in group.partitions} if group else {}
    ranges: dict[TP, tuple[int, int]] = {}
    for tp, off in extra.items():
        if tp[0] in stage.retry_topics:
            start = committed.get(tp)
            start = off.log_start if start is None else max(start, off.log_start)
            ranges[tp] = (start, max(start, off.last_stable_offset))
        elif tp[0] == stage.dlq_topic:
            ranges[tp] = (off.log_start, max(off.log_start, off.last_stable_offset))
    return ranges


def workers_verdict(reports: Sequence[SupervisorReport]) -> tuple[Status, str, int, int] | None:
    """(status, rule, desired, running) of a group's workers from its live supervisors' records.

    None when no supervisor reports the group or none wants a worker (a clean stop). Below the
    desired count is WARN, naming each slot that is not running and why; no worker running and
    none restarting is ERR.
    """
    wanting = [r for r in reports if r.desired > 0]
    if not wanting:
        return None
    desired = sum(r.desired for r in wanting)
    running = sum(r.running for r in wanting)
    if running >= desired:
        return Status.OK, f"OK: {running} of {desired} workers running", desired, running
    missing = [s for r in wanting for s in r.slots if s.state != "running"]
    why = "; ".join(f"slot {s.slot} {s.reason}" for s in sorted(missing, key=lambda s: s.slot))
    down = desired - running
    word = "worker" if desired == 1 else "workers"
    if running == 0 and all(s.state == "down" for s in missing):
        return Status.ERR, f"ERR: {down} of {desired} {word} down: {why}", desired, running
    return Status.WARN, f"WARN: {down} of {desired} {word} down: {why}", desired, running


def _group_verdict(stage: Component, group: GroupLag | None) -> tuple[Status, str]:
    if group is None or not group.exists:
        return Status.ERR, f"ERR: consumer group {stage.group_id} does not exist"
    if not group.partitions:
        return Status.WARN, f"WARN: consumer group {stage.group_id} has no committed offsets"
    return group.status, group.rule


def stage_view(
    stage: Component,
    group: GroupLag | None,
    counts: Mapping[TP, tuple[int, bool]],
    dlq_inflow: float | None,
    supervisors: Sequence[SupervisorReport] = (),
    *,
    due: Mapping[TP, DueSplit] | None = None,
    state: StateProgress | None = None,
) -> StageView:
    """One stage's view from its group's lag, the visible records of its retry and DLQ
    partitions (``counts``: (records, exact) over each of ``side_ranges``), their retry
    records split by due time (``due``) and its live supervisors' records (``state``: an
    aggregate's, from its workers' stats). The stage takes the worse of its lag and workers
    verdicts (the workers' on a tie: a slot that is down is the likelier cause)."""
    partitions = group.partitions if group is not None else ()
    inputs = [p for p in partitions if p.topic in stage.inputs]
    input_lag = sum(p.lag or 0 for p in inputs)
    seconds = [p.lag_seconds for p in inputs if p.lag_seconds is not None]
    input_seconds = max(seconds, default=None)
    if input_seconds is None and input_lag == 0:
        input_seconds = 0.0
    retry_backlog = {
        topic: sum(n for tp, (n, _) in counts.items() if tp[0] == topic)
        for topic in stage.retry_topics
    }
    dlq_depth = sum(n for tp, (n, _) in counts.items() if tp[0] == stage.dlq_topic)
    status, rule = _group_verdict(stage, group)
    if status is Status.OK and dlq_inflow:
        status = Status.WARN
        rule = f"WARN: dead-letter topic {stage.dlq_topic} grows at {dlq_inflow:.2f} records/s"
    workers = workers_verdict(supervisors)
    worse = workers is not None and workers[0] is not Status.OK
    if workers is not None and worse and workers[0].severity >= status.severity:
        status, rule = workers[0], workers[1]
    explained_by = None
    if group is not None and (status, rule) == (group.status, group.rule):
        explained_by = group.explained_by
    return StageView(
        group=stage.group_id,
        input_lag=input_lag,
        input_lag_seconds=input_seconds,
        retry_backlog=retry_backlog,
        dlq_depth=dlq_depth,
        dlq_inflow_per_s=dlq_inflow,
        status=status,
        rule=rule,
        counts_exact=all(exact for _, exact in counts.values()),
        workers_desired=workers[2] if workers else None,
        workers_running=workers[3] if workers else None,
        retry_due=sum(split.due for split in (due or {}).values()),
        retry_not_due=sum(split.not_due for split in (due or {}).values()),
        state_topics=tuple(stage.state_topics),
        state=state if stage.state_topics else None,
        replay=group.replay if group is not None else (),
        explained_by=explained_by,
    )


def end_to_end(pipeline: Pipeline, views: Mapping[str, StageView]) -> float | None:
    """The largest sum of input lag seconds along a path of stages (topic -> stage -> topic).

    None if a stage on the worst path has lag > 0 but no known time lag.
    """
    producers: dict[str, list[str]] = {}
    for component in pipeline.stages:
        for topic in component.outputs:
            producers.setdefault(topic, []).append(component.name)
    memo: dict[str, float] = {}
    unknown = math.nan

    def path(name: str, seen: frozenset[str]) -> float:
        if name in memo:
            return memo[name]
        view = views[name]
        own = view.input_lag_seconds
        if own is None:
            own = unknown if view.input_lag > 0 else 0.0
        upstream = [
            path(producer, seen | {name})
            for topic in pipeline.component(name).inputs
            for producer in producers.get(topic, [])
            if producer not in seen and producer != name
        ]
        if any(math.isnan(value) for value in upstream):
            worst_upstream = unknown
        else:
            worst_upstream = max(upstream, default=0.0)
        memo[name] = own + worst_upstream
        return memo[name]

    totals = [path(name, frozenset()) for name in views]
    if not totals or any(math.isnan(total) for total in totals):
        return None
    return max(totals)
