"""What the monitor serves as JSON: the pipelines' topology, the stage state and the history.

``state_dict`` builds ``/api/state`` from one ``Snapshot``; ``SampleHistory`` keeps the last
samples per stage group for the dashboard's charts.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from streams.observability.exporter import Snapshot
from streams.observability.stats_reader import WorkerStats
from streams.pipeline import Pipeline

if TYPE_CHECKING:
    from streams.lag import GroupLag, StageView

__all__ = ["SampleHistory", "clean", "dumps", "pipeline_topology", "state_dict"]


def pipeline_topology(pipeline: Pipeline) -> dict[str, Any]:
    """Stages, the topic edges between them and a layer per stage (0 = reads no stage's output).

    The dashboard draws layer ``n`` as column ``n``; stages of a layer are stacked in rows.
    """
    stages = pipeline.stages
    producers: dict[str, list[str]] = {}
    for stage in stages:
        for topic in stage.outputs:
            producers.setdefault(topic, []).append(stage.name)
    edges = [
        {"from": source, "to": stage.name, "topic": topic}
        for stage in stages
        for topic in stage.inputs
        for source in producers.get(topic, [])
        if source != stage.name
    ]
    layer = dict.fromkeys((s.name for s in stages), 0)
    for _ in range(len(stages)):  # longest path; bounded so that a cycle cannot loop forever
        for edge in edges:
            layer[edge["to"]] = max(layer[edge["to"]], min(layer[edge["from"]] + 1, len(stages)))
    rows: dict[int, int] = {}
    described = []
    for stage in stages:
        row = rows.get(layer[stage.name], 0)
        rows[layer[stage.name]] = row + 1
        described.append(
            {
                "name": stage.name,
                "group": stage.group_id,
                "kind": stage.kind,
                "inputs": list(stage.inputs),
                "outputs": list(stage.outputs),
                "retry_topics": list(stage.retry_topics),
                "dlq_topic": stage.dlq_topic,
                "state_topics": list(stage.state_topics),  # an aggregate's changelog
                "layer": layer[stage.name],
                "row": row,
                "external_inputs": [t for t in stage.inputs if t not in producers],
            }
        )
    return {"name": pipeline.name, "stages": described, "edges": edges}


def dumps(payload: Any) -> bytes:
    return json.dumps(payload, default=str, allow_nan=False, separators=(",", ":")).encode()


def clean(value: Any) -> Any:
    """NaN and infinities are not JSON: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


class SampleHistory:
    """Per stage group: time, lag, time lag and throughput of the last ``size`` samples."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._series: dict[str, dict[str, deque[float | None]]] = {}
        self._committed: dict[str, tuple[float, int]] = {}

    def throughput(self, group: GroupLag | None, now: float) -> float | None:
        """Records per second the group committed since the previous sample (never negative)."""
        if group is None:
            return None
        total = sum(p.committed or 0 for p in group.partitions)
        previous = self._committed.get(group.group)
        self._committed[group.group] = (now, total)
        if previous is None or now <= previous[0]:
            return None
        return max(0.0, (total - previous[1]) / (now - previous[0]))

    def add(self, group: str, now: float, **values: float | None) -> None:
        series = self._series.get(group)
        if series is None:
            series = {
                name: deque(maxlen=self._size) for name in ("t", "lag", "lag_seconds", "throughput")
            }
            self._series[group] = series
        series["t"].append(round(now, 3))
        for name in ("lag", "lag_seconds", "throughput"):
            series[name].append(values.get(name))

    def to_dict(self) -> dict[str, dict[str, list[float | None]]]:
        return {
            group: {name: list(points) for name, points in series.items()}
            for group, series in self._series.items()
        }


def state_dict(
    snapshot: Snapshot,
    *,
    topologies: Sequence[dict[str, Any]],
    interval_s: float,
    stale_after_s: float,
    history: dict[str, dict[str, list[float | None]]],
    throughput: Mapping[str, float | None],
    partitions: bool,
) -> dict[str, Any]:
    """``/api/state``: groups, pipelines with their topology and stage state, workers, history.

    A pipeline whose view is missing from the snapshot (no good sample yet) has empty stage
    state rather than failing the whole answer.
    """
    workers_by_group: dict[str, list[WorkerStats]] = {}
    for worker in snapshot.workers:
        workers_by_group.setdefault(worker.group, []).append(worker)
    views = {view.pipeline: view for view in snapshot.views}
    pipelines = []
    for topology in topologies:
        view = views.get(topology["name"])
        stages = {
            stage.group: _stage_state(
                stage, workers_by_group.get(stage.group, []), throughput.get(stage.group)
            )
            for stage in (view.stages if view is not None else ())
        }
        pipelines.append(
            {
                **topology,
                "end_to_end_lag_seconds": view.end_to_end_lag_seconds if view else None,
                "view": view.to_dict() if view else None,
                "stage_state": stages,
            }
        )
    return {
        "cluster_name": snapshot.cluster_name,
        "taken_at": snapshot.taken_at,
        "interval_s": interval_s,
        "stale_after_s": stale_after_s,
        "sample_ms": round(snapshot.sample_seconds * 1000, 1),
        "error": snapshot.error,
        "errors": snapshot.errors,
        "pipelines": pipelines,
        "groups": _groups(snapshot, partitions=partitions),
        "workers": [w.to_dict() for w in snapshot.workers],
        "supervisors": [r.to_json() for r in snapshot.supervisors],
        "history": history,
    }


def _groups(snapshot: Snapshot, *, partitions: bool) -> list[dict[str, Any]]:
    """Every group sampled, marked when a pipeline of the monitor holds it."""
    in_pipeline = {s.group for v in snapshot.views for s in v.stages}
    groups = []
    for group in snapshot.groups:
        described = group.to_dict()
        if not partitions:
            described.pop("partitions", None)
            described["partition_count"] = len(group.partitions)
        described["in_pipeline"] = group.group in in_pipeline
        groups.append(described)
    return groups


def _stage_state(
    stage: StageView, workers: Sequence[WorkerStats], throughput: float | None
) -> dict[str, Any]:
    """One stage box of the dashboard: its view, throughput and its workers' counters."""
    breakers = {str(d.get("name")): str(d.get("state")) for w in workers for d in w.dependencies}
    return {
        "group": stage.group,
        "status": str(stage.status),
        "rule": stage.rule,
        # the replay tasks affecting the stage's group, and those that explain its status
        "replay": [mark.to_dict() for mark in stage.replay],
        "explained_by": stage.explained_by,
        "lag": stage.input_lag,
        "lag_seconds": stage.input_lag_seconds,
        "retry_backlog": dict(stage.retry_backlog),
        "retry_total": sum(stage.retry_backlog.values()),
        "dlq_depth": stage.dlq_depth,
        "dlq_inflow_per_s": stage.dlq_inflow_per_s,
        "throughput": throughput,
        "workers": len(workers),
        "workers_desired": stage.workers_desired,
        "workers_running": stage.workers_running,
        "consumed": sum(w.counters.get("consumed", 0) for w in workers),
        "breakers": sorted(breakers.items()),
        # aggregates: keys held and the restore in progress (or the last one), from the stats
        "state_keys": sum(w.counters.get("state_keys", 0) for w in workers),
        "restoring": any(w.counters.get("restoring", 0) for w in workers),
        "restore_restored": sum(w.counters.get("restore_restored", 0) for w in workers),
        "restore_to_restore": sum(w.counters.get("restore_to_restore", 0) for w in workers),
    }
