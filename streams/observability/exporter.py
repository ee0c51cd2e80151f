"""Prometheus metrics of the monitor, rendered from its latest sample (a scrape never asks Kafka).

The lag families keep kafka-lag-exporter's names and labels, so that its dashboards and alerts
work unchanged (``cluster_name`` is ``streams monitor --cluster-name``, default ``default``):

- ``kafka_consumergroup_group_lag{cluster_name,group,topic,partition,member_host,consumer_id,
  client_id}``: committed offset lag (end offset - committed, never below 0); NaN when the
  group has not committed on that partition. The member labels name the consumer that owns
  the partition now, empty when no member does.
- ``kafka_consumergroup_group_lag_seconds{same labels}``: the same lag in seconds (how far
  behind the newest record the committed position is); NaN when unknown.
- ``kafka_consumergroup_group_offset{same labels}``: the committed offset; NaN without one.
- ``kafka_consumergroup_group_max_lag{cluster_name,group}``,
  ``kafka_consumergroup_group_max_lag_seconds{cluster_name,group}``,
  ``kafka_consumergroup_group_sum_lag{cluster_name,group}``: per-group aggregates.
- ``kafka_partition_latest_offset{cluster_name,topic,partition}`` and
  ``kafka_partition_earliest_offset{...}``: high watermark and log start offset of every
  partition some group reads.
- ``kafka_consumergroup_poll_time_ms{cluster_name}``: how long the last sample took.

Ours, from the lag monitor:

- ``streams_group_status{group,status}``: 1 for the group's current status (OK, WARN, STALL,
  STOP, REWIND, ERR), 0 for the others. Alert on ``streams_group_status{status!="OK"} == 1``.
- ``streams_group_replay_active{group,kind}``: 1 while a replay task of that kind (redrive,
  copy, reset) affects the group: a redrive or copy into its input, a reset in the last 10
  minutes (``streams.lag.marks``); no series otherwise. The status stays what it is (a reset
  still shows REWIND): silence a REWIND alert it explains with
  ``unless on(group) streams_group_replay_active{kind="reset"} == 1``.
- ``streams_partition_pending_transactional{group,topic,partition}``: records between the last
  stable offset and the high watermark (open or unresolved transactions); a value stuck above 0
  for longer than the transaction timeout is a hanging transaction.
- ``streams_stage_retry_backlog{pipeline,group,topic}``: records waiting in a retry topic.
- ``streams_stage_dlq_depth{pipeline,group}`` and ``streams_stage_dlq_inflow_per_second``:
  records in the stage's dead-letter topic and how fast it fills. Both these and the retry
  backlog count records as a read_committed consumer reads them, not offsets: transaction
  markers and aborted records are not counted (``streams.lag.visible``).
- ``streams_stage_workers_desired{pipeline,group}`` and ``streams_stage_workers_running``:
  worker processes a stage's supervisors want and have running (``streams run`` publishes
  them to ``_streams.stats``; NaN when no live supervisor reports the stage). Alert on
  running < desired.
- ``streams_pipeline_end_to_end_lag_seconds{pipeline}``: the sum of the stages' time lags.
- ``streams_stage_suggested_replicas{group}``, ``streams_stage_retry_due{group}`` and
  ``streams_stage_retry_not_due{group}``: ``/api/scale/<group>``'s replica count and its
  retry backlog split by due time (``streams.lag.scale``), for the stages of ``--pipeline``.

From the workers (topic ``_streams.stats``, one series per live worker, ``slot`` is its slot):

- ``streams_stage_consumed_total{group,slot}``, ``streams_stage_produced_total``,
  ``streams_stage_retried_total``, ``streams_stage_dead_lettered_total``,
  ``streams_stage_parked_total`` (key-ordered retries: records parked behind their key),
  ``streams_stage_transactions_committed_total``, ``streams_stage_transactions_aborted_total``:
  the worker's counters since it started (a restart resets them: use ``rate()``).
- ``streams_stage_consumed_per_second{group,slot}``: the worker's mean consumption rate since
  it started.
- ``streams_dependency_breaker_state{group,slot,dependency}``: 0 closed, 1 half-open, 2 open.

And about the monitor itself: ``streams_monitor_last_sample_timestamp_seconds`` (alert when it
stops moving: the monitor cannot reach Kafka) and ``streams_monitor_sample_errors_total``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.observability.stats_reader import BREAKER_STATES, WorkerStats
from streams.stats import SupervisorReport

if TYPE_CHECKING:
    from streams.lag import GroupLag, PartitionLag, PipelineView
    from streams.lag.scale import ScaleSignal

__all__ = [
    "METRIC_NAMES",
    "STATUSES",
    "MetricsExporter",
    "Snapshot",
    "SnapshotCollector",
]

STATUSES = ("OK", "WARN", "STALL", "STOP", "REWIND", "ERR")

_PARTITION = ("cluster_name", "group", "topic", "partition", "member_host", "consumer_id")
PARTITION_LABELS = (*_PARTITION, "client_id")
GROUP_LABELS = ("cluster_name", "group")
TOPIC_PARTITION_LABELS = ("cluster_name", "topic", "partition")
WORKER_LABELS = ("group", "slot")

# worker counter (key in the published snapshot) -> metric family name (without _total)
WORKER_COUNTERS = {
    "consumed": "streams_stage_consumed",
    "produced": "streams_stage_produced",
    "retried": "streams_stage_retried",
    "dead_lettered": "streams_stage_dead_lettered",
    "parked": "streams_stage_parked",
    "transactions_committed": "streams_stage_transactions_committed",
    "transactions_aborted": "streams_stage_transactions_aborted",
}

# Every series name a scrape can contain (counters with their _total suffix).
METRIC_NAMES: tuple[str, ...] = (
    "kafka_consumergroup_group_lag",
    "kafka_consumergroup_group_lag_seconds",
    "kafka_consumergroup_group_offset",
    "kafka_consumergroup_group_max_lag",
    "kafka_consumergroup_group_max_lag_seconds",
    "kafka_consumergroup_group_sum_lag",
    "kafka_partition_latest_offset",
    "kafka_partition_earliest_offset",
    "kafka_consumergroup_poll_time_ms",
    "streams_group_status",
    "streams_group_replay_active",
    "streams_partition_pending_transactional",
    "streams_stage_retry_backlog",
    "streams_stage_dlq_depth",
    "streams_stage_dlq_inflow_per_second",
    "streams_stage_workers_desired",
    "streams_stage_workers_running",
    "streams_pipeline_end_to_end_lag_seconds",
    "streams_stage_suggested_replicas",
    "streams_stage_retry_due",
    "streams_stage_retry_not_due",
    *(f"{name}_total" for name in WORKER_COUNTERS.values()),
    "streams_stage_consumed_per_second",
    "streams_dependency_breaker_state",
    "streams_monitor_last_sample_timestamp_seconds",
    "streams_monitor_sample_errors_total",
)


@dataclass(frozen=True)
class Snapshot:
    """One sample of everything the monitor shows; immutable, swapped whole by the sampler."""

    taken_at: float
    cluster_name: str
    groups: tuple[GroupLag, ...]
    views: tuple[PipelineView, ...]
    workers: tuple[WorkerStats, ...]
    sample_seconds: float = 0.0
    errors: int = 0
    error: str | None = None
    supervisors: tuple[SupervisorReport, ...] = ()
    # the autoscaling signal of every stage of the monitor's pipelines (streams.lag.scale)
    scale: tuple[ScaleSignal, ...] = ()


def _owner_labels(partition: PartitionLag) -> tuple[str, str, str]:
    """member_host, consumer_id, client_id of the partition's owner; empty when nobody owns it."""
    owner = partition.owner
    return ("", "", "") if owner is None else (owner.host, owner.member_id, owner.client_id)


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


class SnapshotCollector(Collector):
    """Renders the latest ``Snapshot`` as metric families; never blocks on Kafka."""

    def __init__(self, source: Callable[[], Snapshot | None]) -> None:
        self._source = source

    def describe(self) -> Iterable[Metric]:
        return ()  # no fixed set: registering must not trigger a collection

    def collect(self) -> Iterator[Metric]:
        snapshot = self._source()
        if snapshot is None:
            return
        yield from self._lag(snapshot)
        yield from self._ours(snapshot)
        yield from self._stages(snapshot)
        yield from self._workers(snapshot.workers)
        poll = GaugeMetricFamily(
            "kafka_consumergroup_poll_time_ms", "Time the last sample took", labels=["cluster_name"]
        )
        poll.add_metric([snapshot.cluster_name], snapshot.sample_seconds * 1000)
        yield poll
        last = GaugeMetricFamily(
            "streams_monitor_last_sample_timestamp_seconds",
            "When the monitor last sampled Kafka successfully (unix time)",
        )
        last.add_metric([], snapshot.taken_at)
        yield last
        errors = CounterMetricFamily(
            "streams_monitor_sample_errors", "Samples that failed (Kafka unreachable, ...)"
        )
        errors.add_metric([], snapshot.errors)
        yield errors

    def _lag(self, snapshot: Snapshot) -> Iterator[Metric]:
        # over 50 lines: kafka-lag-exporter's eight families, declared and filled in one pass
        # over the partitions (10,000 of them render in about 0.75 s; a second pass would not)
        cluster = snapshot.cluster_name
        lag = GaugeMetricFamily(
            "kafka_consumergroup_group_lag",
            "Group offset lag of a partition",
            labels=PARTITION_LABELS,
        )
        lag_seconds = GaugeMetricFamily(
            "kafka_consumergroup_group_lag_seconds",
            "Group time lag of a partition",
            labels=PARTITION_LABELS,
        )
        offset = GaugeMetricFamily(
            "kafka_consumergroup_group_offset",
            "Committed offset of a group on a partition",
            labels=PARTITION_LABELS,
        )
        max_lag = GaugeMetricFamily(
            "kafka_consumergroup_group_max_lag", "Max group offset lag", labels=GROUP_LABELS
        )
        max_lag_seconds = GaugeMetricFamily(
            "kafka_consumergroup_group_max_lag_seconds", "Max group time lag", labels=GROUP_LABELS
        )
        sum_lag = GaugeMetricFamily(
            "kafka_consumergroup_group_sum_lag", "Sum of group offset lag", labels=GROUP_LABELS
        )
        latest = GaugeMetricFamily(
            "kafka_partition_latest_offset",
            "Latest offset (high watermark) of a partition",
            labels=TOPIC_PARTITION_LABELS,
        )
        earliest = GaugeMetricFamily(
            "kafka_partition_earliest_offset",
            "Earliest offset (log start) of a partition",
            labels=TOPIC_PARTITION_LABELS,
        )
        seen: set[tuple[str, int]] = set()
        for group in snapshot.groups:
            for p in group.partitions:
                where = (p.topic, p.partition)
                labels = [cluster, group.group, p.topic, str(p.partition), *_owner_labels(p)]
                lag.add_metric(labels, _number(p.lag))
                lag_seconds.add_metric(labels, _number(p.lag_seconds))
                offset.add_metric(labels, _number(p.committed))
                if where not in seen:
                    seen.add(where)
                    latest.add_metric([cluster, p.topic, str(p.partition)], p.high_watermark)
                    earliest.add_metric([cluster, p.topic, str(p.partition)], p.log_start)
            max_lag.add_metric([cluster, group.group], _number(group.max_lag))
            max_lag_seconds.add_metric([cluster, group.group], _number(group.max_lag_seconds))
            sum_lag.add_metric([cluster, group.group], _number(group.sum_lag))
        yield from (lag, lag_seconds, offset, max_lag, max_lag_seconds, sum_lag, latest, earliest)

    def _ours(self, snapshot: Snapshot) -> Iterator[Metric]:
        status = GaugeMetricFamily(
            "streams_group_status",
            "1 for the group's current status, 0 for the others",
            labels=["group", "status"],
        )
        replay = GaugeMetricFamily(
            "streams_group_replay_active",
            "1 while a replay task of this kind affects the group (no series otherwise)",
            labels=["group", "kind"],
        )
        pending = GaugeMetricFamily(
            "streams_partition_pending_transactional",
            "Records between the last stable offset and the high watermark",
            labels=["group", "topic", "partition"],
        )
        for group in snapshot.groups:
            current = str(group.status)
            for name in STATUSES:
                status.add_metric([group.group, name], 1.0 if name == current else 0.0)
            for kind in sorted({mark.kind for mark in group.replay}):
                replay.add_metric([group.group, kind], 1.0)
            for p in group.partitions:
                pending.add_metric(
                    [group.group, p.topic, str(p.partition)], float(p.pending_transactional)
                )
        yield from (status, replay, pending)

    def _stages(self, snapshot: Snapshot) -> Iterator[Metric]:
        backlog = GaugeMetricFamily(
            "streams_stage_retry_backlog",
            "Records waiting in a stage's retry topic",
            labels=["pipeline", "group", "topic"],
        )
        dlq = GaugeMetricFamily(
            "streams_stage_dlq_depth",
            "Records in a stage's dead-letter topic",
            labels=["pipeline", "group"],
        )
        inflow = GaugeMetricFamily(
            "streams_stage_dlq_inflow_per_second",
            "Records per second arriving in a stage's dead-letter topic",
            labels=["pipeline", "group"],
        )
        desired = GaugeMetricFamily(
            "streams_stage_workers_desired",
            "Worker processes a stage's supervisors want (NaN: no supervisor reports it)",
            labels=["pipeline", "group"],
        )
        running = GaugeMetricFamily(
            "streams_stage_workers_running",
            "Worker processes of a stage running, as its supervisors report",
            labels=["pipeline", "group"],
        )
        end_to_end = GaugeMetricFamily(
            "streams_pipeline_end_to_end_lag_seconds",
            "Sum of the time lags of a pipeline's stages",
            labels=["pipeline"],
        )
        for view in snapshot.views:
            for stage in view.stages:
                for topic, depth in sorted(stage.retry_backlog.items()):
                    backlog.add_metric([view.pipeline, stage.group, topic], depth)
                dlq.add_metric([view.pipeline, stage.group], _number(stage.dlq_depth))
                inflow.add_metric([view.pipeline, stage.group], _number(stage.dlq_inflow_per_s))
                desired.add_metric([view.pipeline, stage.group], _number(stage.workers_desired))
                running.add_metric([view.pipeline, stage.group], _number(stage.workers_running))
            end_to_end.add_metric([view.pipeline], _number(view.end_to_end_lag_seconds))
        yield from (backlog, dlq, inflow, desired, running, end_to_end)
        yield from self._scale(snapshot)

    def _scale(self, snapshot: Snapshot) -> Iterator[Metric]:
        suggested = GaugeMetricFamily(
            "streams_stage_suggested_replicas",
            "Replicas /api/scale/<group> suggests (lag and due retries, capped by partitions)",
            labels=["group"],
        )
        due = GaugeMetricFamily(
            "streams_stage_retry_due",
            "Records of a stage's retry backlog that are due now",
            labels=["group"],
        )
        not_due = GaugeMetricFamily(
            "streams_stage_retry_not_due",
            "Records of a stage's retry backlog that are not due yet (no work)",
            labels=["group"],
        )
        for signal in snapshot.scale:
            suggested.add_metric([signal.group], signal.suggested_replicas)
            due.add_metric([signal.group], signal.retry_due)
            not_due.add_metric([signal.group], signal.retry_not_due)
        yield from (suggested, due, not_due)

    def _workers(self, workers: Iterable[WorkerStats]) -> Iterator[Metric]:
        counters = {
            key: CounterMetricFamily(
                name, f"Worker counter {key!r} since it started", labels=WORKER_LABELS
            )
            for key, name in WORKER_COUNTERS.items()
        }
        rate = GaugeMetricFamily(
            "streams_stage_consumed_per_second",
            "Worker's mean consumption rate since it started",
            labels=WORKER_LABELS,
        )
        breaker = GaugeMetricFamily(
            "streams_dependency_breaker_state",
            "Circuit breaker of a dependency: 0 closed, 1 half-open, 2 open",
            labels=[*WORKER_LABELS, "dependency"],
        )
        for worker in workers:
            labels = [worker.group, worker.slot]
            for key, family in counters.items():
                if key in worker.counters:
                    family.add_metric(labels, worker.counters[key])
            if "consumed_per_s" in worker.counters:
                rate.add_metric(labels, worker.counters["consumed_per_s"])
            for dependency in worker.dependencies:
                state = BREAKER_STATES.get(str(dependency.get("state")), math.nan)
                breaker.add_metric([*labels, str(dependency.get("name", ""))], float(state))
        yield from counters.values()
        yield rate
        yield breaker


class MetricsExporter:
    """Its own CollectorRegistry; ``render()`` is cached per snapshot (a scrape is a copy)."""

    def __init__(self, source: Callable[[], Snapshot | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(source))
        self._source = source
        self._lock = threading.Lock()
        self._cached: tuple[Snapshot | None, bytes] | None = None

    def render(self) -> bytes:
        """The Prometheus text exposition of the latest snapshot."""
        snapshot = self._source()
        with self._lock:
            if self._cached is not None and self._cached[0] is snapshot and snapshot is not None:
                return self._cached[1]
            body = generate_latest(self.registry)
            self._cached = (snapshot, body)
            return body
