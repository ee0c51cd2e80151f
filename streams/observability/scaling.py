"""``GET /api/scale/<group>``: each stage's autoscaling signal, built from one monitor sample.

The formula and its rules are ``streams.lag.scale``; this module gathers its inputs from a
sample: the group's lag against the LSO on the stage's input topics, the stage view's retry
backlog split by due time, the input partition count, the live members of the group, and the
breaker states the group's workers publish to ``_streams.stats``. KEDA reads it with the
``metrics-api`` trigger (``valueLocation: suggested_replicas``, ``targetValue: "1"``):
ops/RUNBOOK.md, "Autoscaling".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from streams.lag import GroupLag, PipelineView
from streams.lag.scale import ScaleSignal, suggest_replicas
from streams.observability.stats_reader import WorkerStats
from streams.pipeline import Pipeline
from streams.spec import Component

__all__ = ["NOT_CLOSED", "open_breakers", "scale_signals", "unknown_group"]

# breaker states that hold scale-out: open, and half-open (a probe is out; the dependency has
# not answered yet)
NOT_CLOSED = frozenset({"open", "half_open"})


def open_breakers(workers: Iterable[WorkerStats], group: str) -> list[str]:
    """Names of the dependencies whose breaker a live worker of ``group`` reports not closed."""
    return sorted(
        {
            str(d.get("name"))
            for w in workers
            if w.group == group
            for d in w.dependencies
            if str(d.get("state")) in NOT_CLOSED
        }
    )


def _input_lag(stage: Component, group: GroupLag | None) -> tuple[int, int]:
    """(records behind the LSO on the inputs, the largest input partition count)."""
    if group is None:
        return 0, 0
    lag = 0
    counts: dict[str, int] = {}
    for p in group.partitions:
        if p.topic not in stage.inputs:
            continue
        counts[p.topic] = counts.get(p.topic, 0) + 1
        # no commit: a stage starts from the earliest offset, so all it holds is to come
        lag += p.lag if p.lag is not None else max(0, p.last_stable_offset - p.log_start)
    return lag, max(counts.values(), default=0)


def scale_signals(
    pipelines: Sequence[Pipeline],
    groups: Mapping[str, GroupLag],
    views: Iterable[PipelineView],
    workers: Sequence[WorkerStats],
    *,
    records_per_replica: int,
) -> dict[str, ScaleSignal]:
    """group -> its signal, for every stage of the pipelines (``groups``: the sample's lag)."""
    stage_views = {s.group: s for v in views for s in v.stages}
    signals = {}
    for pipeline in pipelines:
        for stage in pipeline.stages:
            group = groups.get(stage.group_id)
            lag, partitions = _input_lag(stage, group)
            view = stage_views.get(stage.group_id)
            due = view.retry_due if view is not None else 0
            not_due = view.retry_not_due if view is not None else 0
            breakers = open_breakers(workers, stage.group_id)
            current = group.members if group is not None else 0
            suggested, reason = suggest_replicas(
                lag=lag,
                retry_due=due,
                partitions=partitions,
                current_replicas=current,
                breaker_open=bool(breakers),
                records_per_replica=records_per_replica,
            )
            if breakers:
                reason += f" (breaker not closed: {', '.join(breakers)})"
            signals[stage.group_id] = ScaleSignal(
                group=stage.group_id,
                lag=lag,
                retry_due=due,
                retry_not_due=not_due,
                partitions=partitions,
                breaker_open=bool(breakers),
                current_replicas=current,
                suggested_replicas=suggested,
                reason=reason,
            )
    return signals


def unknown_group(group: str, pipelines: Sequence[Pipeline]) -> dict[str, Any]:
    """The 404 body: which groups this monitor can answer for, and how to add one."""
    known = sorted(s.group_id for p in pipelines for s in p.stages)
    return {
        "group": group,
        "error": f"unknown group {group!r}: no stage of this monitor's pipelines has it",
        "hint": "start the monitor with --pipeline MODULE:PIPELINE for the stage's pipeline",
        "groups": known,
    }
