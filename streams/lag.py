"""Consumer lag per group and partition, with a Burrow-style health status and a time lag.

::

    monitor = LagMonitor(window_s=300)
    for group in monitor.sample():            # call every few seconds; history drives the status
        print(group.group, group.status, group.rule)
    view = monitor.pipeline_view(pipeline)    # per stage: input lag, retry backlog, DLQ depth

**Offsets.** One snapshot is a fixed number of batched admin requests, whatever the number of
groups and partitions: ListConsumerGroups (unless groups are given), one DescribeConsumerGroups
for all groups, one ListConsumerGroupOffsets per group (librdkafka takes one group per request;
they are all in flight at once), then ListOffsets three times for every partition at once
(EARLIEST = log start; LATEST with READ_UNCOMMITTED = high watermark; LATEST with
READ_COMMITTED = last stable offset). Group offsets are fetched *before* the end offsets, so a
commit racing the snapshot cannot make the lag negative (kafka_exporter#287); it is clamped at 0
anyway.

**Lag is measured against the LSO** (``lag = LSO - committed``): our stages read with
``read_committed``, so records behind an open transaction are not consumable yet and are reported
separately as ``pending_transactional = HW - LSO``. Kafka's own ``kafka-consumer-groups
--describe`` measures against the HW, so its LAG is ours plus ``pending_transactional``.

**Trailing transaction markers.** Our stages commit the consumer *position* between batches, which
is past the commit marker, so a caught-up stage has ``committed == LSO`` and lag 0. A consumer
that commits ``last record + 1`` instead stops one below the marker (lag 1 forever,
librdkafka#3917). Where the lag is > 0 we read from the committed offset with a read_committed
consumer anyway (for the time lag); if that read reaches the end of the partition without one
visible record, everything in ``[committed, LSO)`` is markers or aborted records, and the lag is
reported as 0 (the rule says so). Only ranges we read are corrected this way.

**No commit** is ``committed = None`` and ``lag = None`` (never -1, never "lag = HW"). Partitions
listed are those the group committed on, those assigned to its live members, and every partition
of the topics given as hints (``sample(topics=...)``, ``pipeline_view``).

**Time lag** (``lag_seconds``), where lag > 0:

- ``"read"``: now minus the timestamp of the first visible record at or after the committed
  offset (the oldest record the group has not processed), read with one read_committed consumer
  assigned to all those partitions at once. Exact, and cached per (topic, partition, offset) since
  a committed record's timestamp never changes; it costs a fetch per partition on the first
  sample after a commit moves. At most ``max_reads`` partitions are read per sample, within
  ``read_timeout_s``; partitions left over fall back to interpolation.
- ``"interpolated"`` (kafka-lag-exporter's method): the time at which the LSO passed the
  committed offset, interpolated from this monitor's own history of (sample time, LSO) points, or
  extrapolated from their overall rate when the committed offset is older than the history. No
  extra requests, but needs two samples, assumes a steady produce rate between samples and is
  only as precise as the sampling interval. ``None`` when neither is possible.

The ``"read"`` method compares record timestamps with the injected clock, so the clock must give
epoch seconds (``time.time``, the default) for it to mean anything.

**Status** (per partition; the first rule that matches wins; the rule that fired is reported):

===========  ================================================================================
ERR          committed < log start: records were deleted by retention before being consumed
OK           no commit on the partition (nothing to judge; lag is unknown)
OK           lag 0 (caught up; ``allowed_lag`` = 0 as in Burrow)
STOP         lag > 0 and the committed offset has not moved for ``window_s`` (over at least
             ``min_samples`` samples) and no live member owns the partition
REWIND       within the window the committed offset went backwards and has not yet come back
STALL        as STOP, but a live member owns the partition (it runs, yet does not progress)
WARN         lag grew over the window: positive least-squares slope and last > first, over at
             least ``min_samples`` samples in the window
WARN         an open transaction holds the LSO longer than ``transaction_timeout_s``
OK           otherwise (catching up, steady, or too little history yet)
===========  ================================================================================

Differences from Burrow (linkedin/Burrow ``core/internal/evaluator/caching.go``):

- The window is in wall-clock time (``window_s``) *and* needs ``min_samples`` samples, instead of
  a number of commits whose span depends on the commit rate (Burrow#303).
- Burrow's rule 1 ("any zero-lag entry in the window means OK") is gone: a single zero-lag commit
  no longer hides a stall or a growing lag for a whole window (Burrow#745). STOP and STALL count
  from when the lag became > 0 at the current committed offset, which also replaces Burrow's
  "a recent broker sample was <= the last commit" suppression of STOP.
- The admin API does not show commits that do not move the offset, so "commits without moving"
  (STALL) and "stopped committing" (STOP) are told apart by group membership: a partition owned
  by a live member is STALL, one owned by nobody is STOP. Groups with no members are evaluated
  like any other (kafka_exporter#226).

**Group status** is the worst of its partitions in the order
``OK < WARN < STALL < REWIND < STOP < ERR``: a stalled consumer still runs and may recover; a
rewind reprocesses (duplicates downstream of non-EOS consumers); a stop means nobody consumes; ERR
means records were lost. Unlike Burrow, STOP/STALL/REWIND are not folded into ERR.
"""

from __future__ import annotations

import enum
import itertools
import math
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any, Self

from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka._model import ConsumerGroupTopicPartitions  # the re-export is untyped
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec  # the re-export is untyped

from streams.config import KafkaSettings
from streams.exceptions import KafkaClientError
from streams.pipeline import Pipeline, StageSpec

__all__ = [
    "GroupLag",
    "GroupSnapshot",
    "LagMonitor",
    "Observation",
    "PartitionLag",
    "PartitionOffsets",
    "PipelineView",
    "StageView",
    "Status",
    "evaluate_partition",
    "worst",
]

TP = tuple[str, int]


class Status(enum.StrEnum):
    """Health of a partition or group; ``severity`` orders them (see the module docstring)."""

    OK = "OK"
    WARN = "WARN"
    STALL = "STALL"
    STOP = "STOP"
    REWIND = "REWIND"
    ERR = "ERR"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {
    Status.OK: 0,
    Status.WARN: 1,
    Status.STALL: 2,
    Status.REWIND: 3,
    Status.STOP: 4,
    Status.ERR: 5,
}

# ListConsumerGroupOffsets returns this for a requested partition without a commit.
_NO_OFFSET = -1001
# A bound on cached record timestamps: ~100 bytes each, so about 10 MB at most.
_TIMESTAMP_CACHE_SIZE = 100_000
# History kept per partition, in windows: STOP/STALL need the run of unchanged commits to reach
# back at least one window, so keep a little more than one.
_HISTORY_WINDOWS = 2.0
# and in samples, so that a very short sampling interval cannot grow memory without bound
_HISTORY_MAX_SAMPLES = 2000


@dataclass(frozen=True)
class Observation:
    """One sample of one group's partition: when, the committed offset, the LSO and the lag."""

    t: float
    committed: int | None
    end: int
    lag: int | None


@dataclass(frozen=True)
class PartitionLag:
    """Lag of one consumer group on one partition (see the module docstring for each field)."""

    group: str
    topic: str
    partition: int
    committed: int | None
    log_start: int
    high_watermark: int
    last_stable_offset: int
    lag: int | None
    pending_transactional: int
    lag_seconds: float | None
    lag_seconds_method: str | None
    velocity: float | None
    eta_seconds: float | None
    status: Status
    rule: str
    data_loss: bool
    hanging_transaction: bool

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = str(self.status)
        return data


@dataclass(frozen=True)
class GroupLag:
    """One consumer group: its state, members and partitions, and the worst partition status."""

    group: str
    state: str
    members: int
    partitions: tuple[PartitionLag, ...]
    status: Status
    rule: str
    sum_lag: int
    max_lag: int
    max_lag_seconds: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "state": self.state,
            "members": self.members,
            "status": str(self.status),
            "rule": self.rule,
            "sum_lag": self.sum_lag,
            "max_lag": self.max_lag,
            "max_lag_seconds": self.max_lag_seconds,
            "partitions": [p.to_dict() for p in self.partitions],
        }


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


def worst(statuses: Iterable[Status]) -> Status:
    """The most severe status (OK for none)."""
    return max(statuses, key=lambda status: status.severity, default=Status.OK)


def _slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None with fewer than 2 points or no time spread."""
    if len(points) < 2:  # noqa: PLR2004 - a line needs two points
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def evaluate_partition(  # noqa: C901, PLR0911, PLR0912 - one branch and return per rule
    history: Sequence[Observation],
    *,
    now: float,
    window_s: float,
    min_samples: int,
    owned: bool,
    log_start: int = 0,
    allowed_lag: int = 0,
) -> tuple[Status, str]:
    """The status of one partition and the rule that fired, from its history (last = current).

    ``owned``: a live member of the group has the partition assigned. Pure: no broker.
    """
    if not history:
        return Status.OK, "OK: no sample yet"
    current = history[-1]
    if current.committed is None or current.lag is None:
        return Status.OK, "OK: no commit (lag unknown)"
    if current.committed < log_start:
        lost = log_start - current.committed
        return (
            Status.ERR,
            (
                f"ERR: committed offset {current.committed} is below log start {log_start}: "
                f"{lost} records deleted by retention before being consumed"
            ),
        )
    if current.lag <= allowed_lag:
        return Status.OK, "OK: caught up (lag 0)"

    # the trailing run of samples at the current committed offset with lag > 0
    run_start = len(history) - 1
    while run_start > 0:
        previous = history[run_start - 1]
        if (
            previous.committed != current.committed
            or previous.lag is None
            or previous.lag <= allowed_lag
        ):
            break
        run_start -= 1
    stuck_for = now - history[run_start].t
    stuck_samples = len(history) - run_start
    stuck = stuck_for >= window_s and stuck_samples >= min_samples
    if stuck and not owned:
        return (
            Status.STOP,
            (
                f"STOP: no commit for {stuck_for:.0f} s while lag > 0 "
                f"(committed {current.committed}, lag {current.lag}, no live member owns it)"
            ),
        )

    window = [o for o in history if o.t >= now - window_s and o.committed is not None]
    for i in range(len(window) - 1, 0, -1):
        before, after = window[i - 1].committed, window[i].committed
        assert before is not None  # noqa: S101 - filtered above
        assert after is not None  # noqa: S101
        if after < before:
            if all(o.committed is not None and o.committed < before for o in window[i:]):
                return (
                    Status.REWIND,
                    (
                        f"REWIND: committed offset went back from {before} to {after} "
                        f"{now - window[i].t:.0f} s ago and has not come back"
                    ),
                )
            break

    if stuck:
        return (
            Status.STALL,
            (
                f"STALL: committed offset {current.committed} unchanged for {stuck_for:.0f} s "
                f"while lag > 0 (lag {current.lag}; a live member owns the partition)"
            ),
        )

    lags = [(o.t, float(o.lag)) for o in window if o.lag is not None]
    if len(lags) >= min_samples:
        slope = _slope(lags)
        first, last = lags[0][1], lags[-1][1]
        span = lags[-1][0] - lags[0][0]
        if slope is not None and slope > 0 and last > first:
            return (
                Status.WARN,
                (
                    f"WARN: lag grew from {first:.0f} to {last:.0f} over {span:.0f} s "
                    f"({slope:+.1f} records/s, {len(lags)} samples)"
                ),
            )
    if len(lags) < min_samples:
        return (
            Status.OK,
            (
                f"OK: lag {current.lag}, too little history to judge ({len(lags)} of "
                f"{min_samples} samples)"
            ),
        )
    return Status.OK, f"OK: lag {current.lag}, not growing"


def _trend(history: Sequence[Observation], now: float, window_s: float) -> float | None:
    points = [(o.t, float(o.lag)) for o in history if o.t >= now - window_s and o.lag is not None]
    return _slope(points)


def _interpolate_arrival(points: Sequence[tuple[float, int]], offset: int) -> float | None:
    """When the end offset passed ``offset``, from (time, end offset) points (oldest first)."""
    if len(points) < 2:  # noqa: PLR2004 - a line needs two points
        return None
    for (t0, e0), (t1, e1) in itertools.pairwise(points):
        if e0 <= offset < e1:
            return t0 + (offset - e0) * (t1 - t0) / (e1 - e0)
    (t_first, e_first), (t_last, e_last) = points[0], points[-1]
    if offset < e_first and e_last > e_first and t_last > t_first:
        rate = (e_last - e_first) / (t_last - t_first)
        return t_first - (e_first - offset) / rate
    return None


@dataclass
class GroupSnapshot:
    group: str
    state: str
    members: int
    owned: set[TP] = field(default_factory=set)
    committed: dict[TP, int | None] = field(default_factory=dict)


@dataclass(frozen=True)
class PartitionOffsets:
    log_start: int
    high_watermark: int
    last_stable_offset: int


@dataclass(frozen=True)
class _Row:
    """One group's partition in one snapshot, before evaluation."""

    info: GroupSnapshot
    tp: TP
    committed: int | None
    offsets: PartitionOffsets

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.tp[0], self.tp[1], self.committed if self.committed is not None else -1)

    @property
    def lag(self) -> int | None:
        if self.committed is None:
            return None
        return max(0, self.offsets.last_stable_offset - self.committed)

    @property
    def data_loss(self) -> bool:
        return self.committed is not None and self.committed < self.offsets.log_start


# reads the timestamp (ms) of the first visible record at or after each (topic, partition, offset);
# None in the result = read to the end without a visible record; missing = could not read
TimestampReader = Callable[[Sequence[tuple[str, int, int]]], dict[tuple[str, int, int], int | None]]


class LagMonitor:
    """Samples consumer-group lag and keeps the history that statuses and trends need.

    If a call raises KafkaClientError: check that the broker at STREAMS_BOOTSTRAP_SERVERS
    answers (``streams local status``) and that this client may describe groups.
    """

    def __init__(
        self,
        kafka: KafkaSettings | None = None,
        *,
        window_s: float = 300.0,
        min_samples: int = 3,
        transaction_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        request_timeout_s: float = 10.0,
        read_timeout_s: float = 2.0,
        max_reads: int = 5000,
    ) -> None:
        self.kafka = kafka or KafkaSettings()
        self.window_s = window_s
        self.min_samples = min_samples
        self.transaction_timeout_s = transaction_timeout_s
        self.request_timeout_s = request_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_reads = max_reads
        self._clock = clock
        self._admin: AdminClient | None = None
        self._reader: Consumer | None = None
        self._history: dict[tuple[str, str, int], deque[Observation]] = {}
        self._ends: dict[TP, deque[tuple[float, int]]] = {}
        self._pending_since: dict[TP, tuple[int, float]] = {}
        self._timestamps: OrderedDict[tuple[str, int, int], int] = OrderedDict()

    # -- public ------------------------------------------------------------------------------

    def sample(
        self,
        groups: Iterable[str] | None = None,
        *,
        topics: Mapping[str, Iterable[str]] | None = None,
    ) -> list[GroupLag]:
        """One snapshot of all (or the given) groups; ``topics`` lists topics per group whose
        partitions are shown even without a commit."""
        now = self._clock()
        admin = self._admin_client()
        partition_counts = self._partition_counts(admin)
        group_ids = list(groups) if groups is not None else self._list_groups(admin)
        infos = self._describe(admin, group_ids)
        self._fetch_committed(admin, infos)
        for info in infos:
            for topic in (topics or {}).get(info.group, ()):
                for partition in range(partition_counts.get(topic, 0)):
                    info.committed.setdefault((topic, partition), None)
            for tp in info.owned:
                info.committed.setdefault(tp, None)
            # only partitions that exist (a deleted topic's commits linger until expiry)
            info.committed = {
                tp: offset
                for tp, offset in info.committed.items()
                if tp[1] < partition_counts.get(tp[0], 0)
            }
        wanted = {tp for info in infos for tp in info.committed}
        offsets = self._list_offsets(admin, wanted)
        return self.ingest(now, infos, offsets, self._read_timestamps)

    def pipeline_view(
        self, pipeline: Pipeline, groups: list[GroupLag] | None = None
    ) -> PipelineView:
        """Per stage: input lag and its age, retry backlog, DLQ depth and inflow; end-to-end lag.

        ``groups``: a sample to reuse (else the pipeline's groups are sampled now). A stage's
        status is its group's; a stage whose group is OK but whose DLQ grew in the window is WARN.
        """
        stages = pipeline.stages
        hints = {
            stage.group_id: [
                *stage.inputs,
                *(stage.retry_topics if isinstance(stage, StageSpec) else []),
            ]
            for stage in stages
        }
        if groups is None:
            groups = self.sample(list(hints), topics=hints)
        by_group = {group.group: group for group in groups}
        extra_topics = {
            topic
            for stage in stages
            if isinstance(stage, StageSpec)
            for topic in (*stage.retry_topics, stage.dlq_topic)
        }
        now = self._clock()
        extra = self._topic_offsets(extra_topics, now) if extra_topics else {}
        views: dict[str, StageView] = {}
        for stage in stages:
            views[stage.name] = self._stage_view(stage, by_group.get(stage.group_id), extra, now)
        return PipelineView(
            pipeline=pipeline.name,
            stages=tuple(views.values()),
            end_to_end_lag_seconds=_end_to_end(pipeline, views),
        )

    def close(self) -> None:
        """Close the consumer used to read record timestamps (the admin client needs nothing)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._admin = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- evaluation (no broker: unit tests drive this directly) ------------------------------

    def ingest(
        self,
        now: float,
        infos: Sequence[GroupSnapshot],
        offsets: Mapping[TP, PartitionOffsets],
        read_timestamps: TimestampReader,
    ) -> list[GroupLag]:
        """Turn one snapshot into GroupLags, adding it to the history. Public for tests."""
        for tp, off in offsets.items():
            self._record_end(tp, off, now)
        rows = [
            _Row(info, tp, info.committed[tp], offsets[tp])
            for info in infos
            for tp in sorted(info.committed)
            if tp in offsets
        ]
        to_read = {
            row.key: None
            for row in rows
            if row.lag and row.key not in self._timestamps and not row.data_loss
        }
        read = read_timestamps(list(to_read)[: self.max_reads]) if to_read else {}
        for key, timestamp in read.items():
            if timestamp is not None:
                self._remember_timestamp(key, timestamp)
        by_group: dict[str, list[PartitionLag]] = {info.group: [] for info in infos}
        for row in rows:
            by_group[row.info.group].append(self._partition(row, read, now))
        return [self._group(info, by_group[info.group]) for info in infos]

    def _time_lag(
        self, row: _Row, read: Mapping[tuple[str, int, int], int | None], now: float
    ) -> tuple[int | None, float | None, str | None]:
        """(lag, lag_seconds, method); lag becomes 0 where only markers precede the LSO."""
        if row.lag is None:
            return None, None, None
        if row.lag == 0:
            return 0, 0.0, None
        if row.key in read and read[row.key] is None:
            return 0, 0.0, "read"  # read to the LSO: no visible record left to consume
        if row.key in self._timestamps:
            self._timestamps.move_to_end(row.key)
            return row.lag, max(0.0, now - self._timestamps[row.key] / 1000), "read"
        if not row.data_loss and row.committed is not None:
            arrival = _interpolate_arrival(list(self._ends.get(row.tp, ())), row.committed)
            if arrival is not None:
                return row.lag, max(0.0, now - arrival), "interpolated"
        return row.lag, None, None

    def _partition(
        self, row: _Row, read: Mapping[tuple[str, int, int], int | None], now: float
    ) -> PartitionLag:
        info, tp, committed, off = row.info, row.tp, row.committed, row.offsets
        topic, partition = tp
        lag, lag_seconds, method = self._time_lag(row, read, now)
        markers_only = row.lag != lag
        history = self._history.setdefault(
            (info.group, topic, partition), deque(maxlen=_HISTORY_MAX_SAMPLES)
        )
        history.append(Observation(now, committed, off.last_stable_offset, lag))
        while history and history[0].t < now - _HISTORY_WINDOWS * self.window_s:
            history.popleft()
        status, rule = evaluate_partition(
            history,
            now=now,
            window_s=self.window_s,
            min_samples=self.min_samples,
            owned=tp in info.owned,
            log_start=off.log_start,
        )
        pending = max(0, off.high_watermark - off.last_stable_offset)
        since = self._pending_since.get(tp)
        hanging = pending > 0 and since is not None and now - since[1] > self.transaction_timeout_s
        if hanging and status is Status.OK:
            assert since is not None  # noqa: S101
            status = Status.WARN
            rule = (
                f"WARN: an open transaction has held the LSO at {off.last_stable_offset} for "
                f"{now - since[1]:.0f} s (> {self.transaction_timeout_s:.0f} s transaction timeout)"
            )
        if markers_only:
            rule += (
                f" (the {row.lag} offsets before the LSO are transaction markers or aborted "
                "records only)"
            )
        velocity = _trend(history, now, self.window_s) if lag is not None else None
        eta = None
        if velocity is not None and velocity < 0 and lag is not None:
            eta = lag / -velocity
        return PartitionLag(
            group=info.group,
            topic=topic,
            partition=partition,
            committed=committed,
            log_start=off.log_start,
            high_watermark=off.high_watermark,
            last_stable_offset=off.last_stable_offset,
            lag=lag,
            pending_transactional=pending,
            lag_seconds=lag_seconds,
            lag_seconds_method=method,
            velocity=velocity,
            eta_seconds=eta,
            status=status,
            rule=rule,
            data_loss=row.data_loss,
            hanging_transaction=hanging,
        )

    @staticmethod
    def _group(info: GroupSnapshot, partitions: list[PartitionLag]) -> GroupLag:
        lags = [p.lag for p in partitions if p.lag is not None]
        seconds = [p.lag_seconds for p in partitions if p.lag_seconds is not None]
        status = worst(p.status for p in partitions)
        culprit = max(
            (p for p in partitions if p.status is status),
            key=lambda p: p.lag or 0,
            default=None,
        )
        if culprit is None:
            rule = "OK: no committed offsets"
        else:
            rule = f"{culprit.topic}[{culprit.partition}] {culprit.rule}"
        return GroupLag(
            group=info.group,
            state=info.state,
            members=info.members,
            partitions=tuple(partitions),
            status=status,
            rule=rule,
            sum_lag=sum(lags),
            max_lag=max(lags, default=0),
            max_lag_seconds=max(seconds, default=None),
        )

    def _record_end(self, tp: TP, off: PartitionOffsets, now: float) -> None:
        ends = self._ends.setdefault(tp, deque(maxlen=_HISTORY_MAX_SAMPLES))
        lso = off.last_stable_offset
        # flat-run compression (kafka-lag-exporter): keep the first and latest time of a run
        if len(ends) >= 2 and ends[-1][1] == lso and ends[-2][1] == lso:  # noqa: PLR2004
            ends[-1] = (now, lso)
        elif not ends or now > ends[-1][0]:
            ends.append((now, lso))
        while len(ends) > 2 and ends[1][0] < now - _HISTORY_WINDOWS * self.window_s:  # noqa: PLR2004
            ends.popleft()
        pending = off.high_watermark > lso
        since = self._pending_since.get(tp)
        if not pending:
            self._pending_since.pop(tp, None)
        elif since is None or since[0] != lso:
            self._pending_since[tp] = (lso, now)

    def _remember_timestamp(self, key: tuple[str, int, int], timestamp: int) -> None:
        self._timestamps[key] = timestamp
        self._timestamps.move_to_end(key)
        while len(self._timestamps) > _TIMESTAMP_CACHE_SIZE:
            self._timestamps.popitem(last=False)

    def _stage_view(
        self,
        stage: Any,
        group: GroupLag | None,
        extra: Mapping[TP, PartitionOffsets],
        now: float,
    ) -> StageView:
        partitions = group.partitions if group is not None else ()
        inputs = [p for p in partitions if p.topic in stage.inputs]
        input_lag = sum(p.lag or 0 for p in inputs)
        seconds = [p.lag_seconds for p in inputs if p.lag_seconds is not None]
        input_seconds = max(seconds, default=None)
        if input_seconds is None and input_lag == 0:
            input_seconds = 0.0
        retry_backlog: dict[str, int] = {}
        dlq_depth = 0
        dlq_inflow: float | None = None
        if isinstance(stage, StageSpec):
            committed = {(p.topic, p.partition): p.committed for p in partitions}
            for topic in stage.retry_topics:
                backlog = 0
                for tp, off in extra.items():
                    if tp[0] != topic:
                        continue
                    start = committed.get(tp)
                    start = off.log_start if start is None else max(start, off.log_start)
                    backlog += max(0, off.last_stable_offset - start)
                retry_backlog[topic] = backlog
            dlq = [(tp, off) for tp, off in extra.items() if tp[0] == stage.dlq_topic]
            dlq_depth = sum(max(0, off.last_stable_offset - off.log_start) for _, off in dlq)
            dlq_inflow = self._inflow([tp for tp, _ in dlq], now)
        if group is None or not group.partitions:
            status = Status.WARN
            rule = f"WARN: consumer group {stage.group_id} has no committed offsets"
        else:
            status, rule = group.status, group.rule
        if status is Status.OK and dlq_inflow:
            status = Status.WARN
            rule = f"WARN: dead-letter topic {stage.dlq_topic} grows at {dlq_inflow:.2f} records/s"
        return StageView(
            group=stage.group_id,
            input_lag=input_lag,
            input_lag_seconds=input_seconds,
            retry_backlog=retry_backlog,
            dlq_depth=dlq_depth,
            dlq_inflow_per_s=dlq_inflow,
            status=status,
            rule=rule,
        )

    def _inflow(self, tps: Sequence[TP], now: float) -> float | None:
        """Records/s added over the window, summed over partitions; None before two samples."""
        total, known = 0.0, False
        for tp in tps:
            points = [p for p in self._ends.get(tp, ()) if p[0] >= now - self.window_s]
            if len(points) >= 2 and points[-1][0] > points[0][0]:  # noqa: PLR2004
                total += (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])
                known = True
        return total if known else None

    # -- broker ------------------------------------------------------------------------------

    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(
                {**self.kafka.client_config(), "socket.connection.setup.timeout.ms": 5000}
            )
        return self._admin

    def _fail(self, what: str, error: BaseException) -> KafkaClientError:
        return KafkaClientError(
            f"cannot {what} on {self.kafka.bootstrap_servers}: {error}",
            hint="check that the broker answers (`streams local status`) and "
            "STREAMS_BOOTSTRAP_SERVERS points at it",
        )

    def _partition_counts(self, admin: AdminClient) -> dict[str, int]:
        try:
            metadata = admin.list_topics(timeout=self.request_timeout_s)
        except KafkaException as error:
            raise self._fail("read cluster metadata", error) from error
        return {name: len(topic.partitions) for name, topic in metadata.topics.items()}

    def _list_groups(self, admin: AdminClient) -> list[str]:
        try:
            result = admin.list_consumer_groups(request_timeout=self.request_timeout_s).result(
                timeout=self.request_timeout_s
            )
        except KafkaException as error:
            raise self._fail("list consumer groups", error) from error
        return sorted(listing.group_id for listing in result.valid)

    def _describe(self, admin: AdminClient, group_ids: list[str]) -> list[GroupSnapshot]:
        if not group_ids:
            return []
        futures = admin.describe_consumer_groups(group_ids, request_timeout=self.request_timeout_s)
        infos = []
        for group_id in group_ids:
            try:
                description = futures[group_id].result(timeout=self.request_timeout_s)
            except KafkaException as error:
                if _is_transport_error(error):
                    raise self._fail("describe consumer groups", error) from error
                infos.append(GroupSnapshot(group_id, "Dead", 0))  # e.g. GROUP_ID_NOT_FOUND
                continue
            owned: set[TP] = set()
            for member in description.members:
                assignment = member.assignment
                for tp in assignment.topic_partitions if assignment is not None else ():
                    owned.add((tp.topic, tp.partition))
            state = getattr(description.state, "name", str(description.state))
            infos.append(
                GroupSnapshot(group_id, _state_name(state), len(description.members), owned)
            )
        return infos

    def _fetch_committed(self, admin: AdminClient, infos: Sequence[GroupSnapshot]) -> None:
        futures: dict[str, Future[Any]] = {}
        for info in infos:
            # one group per request (librdkafka's limit); all are in flight together
            futures.update(
                admin.list_consumer_group_offsets(
                    [ConsumerGroupTopicPartitions(info.group)],
                    request_timeout=self.request_timeout_s,
                )
            )
        for info in infos:
            try:
                result = futures[info.group].result(timeout=self.request_timeout_s)
            except KafkaException as error:
                if _is_transport_error(error):
                    raise self._fail("list consumer group offsets", error) from error
                continue
            for tp in result.topic_partitions or ():
                if tp.error is not None:
                    continue
                offset = tp.offset if tp.offset >= 0 and tp.offset != _NO_OFFSET else None
                info.committed[(tp.topic, tp.partition)] = offset

    def _list_offsets(self, admin: AdminClient, wanted: Iterable[TP]) -> dict[TP, PartitionOffsets]:
        tps = sorted(wanted)
        if not tps:
            return {}
        specs = (
            (OffsetSpec.earliest(), IsolationLevel.READ_UNCOMMITTED),  # type: ignore[no-untyped-call]
            (OffsetSpec.latest(), IsolationLevel.READ_UNCOMMITTED),  # type: ignore[no-untyped-call]
            (OffsetSpec.latest(), IsolationLevel.READ_COMMITTED),  # type: ignore[no-untyped-call]
        )
        requests = [
            admin.list_offsets(
                {TopicPartition(topic, partition): spec for topic, partition in tps},
                isolation_level=isolation,
                request_timeout=self.request_timeout_s,
            )
            for spec, isolation in specs
        ]
        found: list[dict[TP, int]] = []
        for futures in requests:
            values: dict[TP, int] = {}
            for tp, future in futures.items():
                try:
                    values[(tp.topic, tp.partition)] = future.result(
                        timeout=self.request_timeout_s
                    ).offset
                except KafkaException as error:
                    if _is_transport_error(error):
                        raise self._fail("list offsets", error) from error
            found.append(values)
        starts, highs, stables = found
        return {
            tp: PartitionOffsets(starts[tp], highs[tp], min(stables[tp], highs[tp]))
            for tp in tps
            if tp in starts and tp in highs and tp in stables
        }

    def _topic_offsets(self, topics: Iterable[str], now: float) -> dict[TP, PartitionOffsets]:
        admin = self._admin_client()
        counts = self._partition_counts(admin)
        wanted = [(t, p) for t in topics for p in range(counts.get(t, 0))]
        offsets = self._list_offsets(admin, wanted)
        for tp, off in offsets.items():
            self._record_end(tp, off, now)
        return offsets

    def _read_timestamps(
        self, keys: Sequence[tuple[str, int, int]]
    ) -> dict[tuple[str, int, int], int | None]:
        """Timestamp of the first visible record at or after each offset; None = none before
        the LSO. One read_committed consumer, all partitions assigned at once; a partition wanted
        at several offsets (several groups) is read again in a later round."""
        rounds = _rounds(keys)
        reader = self._reader_consumer()
        results: dict[tuple[str, int, int], int | None] = {}
        deadline = time.monotonic() + self.read_timeout_s
        for assignment in rounds:
            if time.monotonic() >= deadline:
                break
            reader.assign([TopicPartition(t, p, o) for (t, p), o in assignment.items()])
            waiting = dict(assignment)
            while waiting and time.monotonic() < deadline:
                for message in reader.consume(num_messages=10_000, timeout=0.05):
                    tp = (message.topic(), message.partition())
                    if tp not in waiting:
                        continue
                    error = message.error()
                    if error is None:
                        _, timestamp = message.timestamp()
                        results[(*tp, waiting.pop(tp))] = timestamp
                    elif error.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
                        results[(*tp, waiting.pop(tp))] = None
                    else:
                        waiting.pop(tp)  # out of range, deleted...: fall back to interpolation
            reader.unassign()
        return results

    def _reader_consumer(self) -> Consumer:
        if self._reader is None:
            self._reader = Consumer(
                {
                    **self.kafka.client_config(),
                    # never joins or commits: assign() only; the id just satisfies the client
                    "group.id": f"streams-lag-reader-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "enable.partition.eof": True,
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "error",
                    # one record per partition is all we need: keep fetches small and quick
                    "fetch.wait.max.ms": 10,
                    "max.partition.fetch.bytes": 4096,
                    "queued.max.messages.kbytes": 1024,
                }
            )
        return self._reader


def _rounds(keys: Sequence[tuple[str, int, int]]) -> list[dict[TP, int]]:
    """Split reads into assignments with each partition at most once (one position each)."""
    rounds: list[dict[TP, int]] = []
    for topic, partition, offset in keys:
        for assignment in rounds:
            if (topic, partition) not in assignment:
                assignment[(topic, partition)] = offset
                break
        else:
            rounds.append({(topic, partition): offset})
    return rounds


def _state_name(state: str) -> str:
    """librdkafka's state names (STABLE, EMPTY...) as Kafka's tools print them."""
    return state.replace("_", " ").title().replace(" ", "")


def _is_transport_error(error: KafkaException) -> bool:
    kafka_error = error.args[0] if error.args else None
    if not isinstance(kafka_error, KafkaError):
        return True
    return kafka_error.code() in {
        KafkaError._TRANSPORT,  # noqa: SLF001
        KafkaError._TIMED_OUT,  # noqa: SLF001
        KafkaError._ALL_BROKERS_DOWN,  # noqa: SLF001
    }


def _end_to_end(pipeline: Pipeline, views: Mapping[str, StageView]) -> float | None:
    """The largest sum of input lag seconds along a path of stages (topic -> stage -> topic).

    None if a stage on the worst path has lag > 0 but no known time lag.
    """
    producers: dict[str, list[str]] = {}
    for stage in pipeline.stages:
        if isinstance(stage, StageSpec):
            for topic in stage.outputs:
                producers.setdefault(topic, []).append(stage.name)
    memo: dict[str, float] = {}
    unknown = math.nan

    def path(name: str, seen: frozenset[str]) -> float:
        if name in memo:
            return memo[name]
        view = views[name]
        own = view.input_lag_seconds
        if own is None:
            own = unknown if view.input_lag > 0 else 0.0
        stage = pipeline.component(name)
        upstream = [
            path(producer, seen | {name})
            for topic in stage.inputs
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
    if not totals:
        return None
    if any(math.isnan(total) for total in totals):
        return None
    return max(totals)
