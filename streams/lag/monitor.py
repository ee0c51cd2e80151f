"""``LagMonitor``: samples group lag, keeps the history statuses need, builds pipeline views."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Self

from streams.config import KafkaSettings
from streams.lag.due import DueLedger
from streams.lag.fetch import KafkaFetcher, TimestampReader
from streams.lag.marks import ReplayMark, ReplaySource, explain
from streams.lag.snapshot import TP, GroupLag, GroupSnapshot, PartitionLag, PartitionOffsets
from streams.lag.status import (
    Observation,
    Status,
    evaluate_group,
    evaluate_partition,
    interpolate_arrival,
    trend,
    worst,
)
from streams.lag.view import (
    PipelineView,
    StageView,
    StateProgress,
    end_to_end,
    lag_hints,
    side_ranges,
    side_topics,
    stage_view,
)
from streams.lag.visible import SideCounter
from streams.pipeline import Pipeline
from streams.stats import SupervisorReport

__all__ = ["LagMonitor"]

# A bound on cached record timestamps: ~100 bytes each, so about 10 MB at most.
_TIMESTAMP_CACHE_SIZE = 100_000
# History kept per partition, in windows: STOP/STALL need the run of unchanged commits to reach
# back at least one window, so keep a little more than one.
_HISTORY_WINDOWS = 2.0
# and in samples, so that a very short sampling interval cannot grow memory without bound
_HISTORY_MAX_SAMPLES = 2000


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


class LagMonitor:
    """Samples consumer-group lag and keeps the history that statuses and trends need.

    If a call raises KafkaClientError: check that the broker at STREAMS_BOOTSTRAP_SERVERS
    answers (``streams local status``) and that this client may describe groups.

    ``replay``: where the replay tasks affecting each group come from, asked once per sample
    (``streams.replay.tasks.ReplayMarks`` reads the ledger); without it no group is marked.
    The monitor closes and reconnects it with its own clients.
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
        replay: ReplaySource | None = None,
    ) -> None:
        self.kafka = kafka or KafkaSettings()
        self.window_s = window_s
        self.min_samples = min_samples
        self.transaction_timeout_s = transaction_timeout_s
        self.max_reads = max_reads
        self._clock = clock
        self._fetch = KafkaFetcher(
            self.kafka, request_timeout_s=request_timeout_s, read_timeout_s=read_timeout_s
        )
        self._history: dict[tuple[str, str, int], deque[Observation]] = {}
        self._ends: dict[TP, deque[tuple[float, int]]] = {}
        self._pending_since: dict[TP, tuple[int, float]] = {}
        self._timestamps: OrderedDict[tuple[str, int, int], int] = OrderedDict()
        self._side = SideCounter(
            self._fetch.scan_visible, window_s=window_s, max_points=_HISTORY_MAX_SAMPLES
        )
        self._due = DueLedger(self._fetch.scan_due)
        self._replay = replay

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
        fetch = self._fetch
        partition_counts = fetch.partition_counts()
        group_ids = list(groups) if groups is not None else fetch.list_groups()
        infos = fetch.describe(group_ids)
        fetch.fetch_committed(infos)
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
        offsets = fetch.list_offsets(wanted)
        marks = self._replay.marks(round(now * 1000)) if self._replay is not None else {}
        return self.ingest(now, infos, offsets, fetch.read_timestamps, replay=marks)

    def pipeline_view(
        self,
        pipeline: Pipeline,
        groups: list[GroupLag] | None = None,
        *,
        supervisors: Iterable[SupervisorReport] = (),
        states: Mapping[str, StateProgress] | None = None,
    ) -> PipelineView:
        """Per stage: input lag and its age, retry backlog (due now and not yet), DLQ depth and
        inflow, workers; end-to-end lag.

        ``groups``: a sample to reuse (else the pipeline's groups are sampled now).
        ``supervisors``: the live supervisors' records (``StatsReader.supervisors()``). A
        stage's status is its group's; WARN if the group is OK but its DLQ grew in the window;
        WARN or ERR when its workers are below their desired count (``view.workers_verdict``).
        ``states``: group -> an aggregate's state as its workers report it (the CLI reads them
        from the stats topic), shown next to its changelog topic.
        """
        if groups is None:
            hints = lag_hints(pipeline)
            groups = self.sample(list(hints), topics=hints)
        by_group = {group.group: group for group in groups}
        reports = list(supervisors)
        extra_topics = side_topics(pipeline)
        now = self._clock()
        extra = self._fetch.topic_offsets(extra_topics) if extra_topics else {}
        for tp, off in extra.items():
            self._record_end(tp, off, now)
        ranges = {
            stage.name: side_ranges(stage, by_group.get(stage.group_id), extra)
            for stage in pipeline.stages
        }
        counts = self._side.count({tp: r for found in ranges.values() for tp, r in found.items()})
        retries = {
            tp: r
            for stage in pipeline.stages
            for tp, r in ranges[stage.name].items()
            if tp[0] in stage.retry_topics
        }
        dues = self._due.split(retries, round(now * 1000))
        views: dict[str, StageView] = {}
        for stage in pipeline.stages:
            mine = {tp: counts[tp] for tp in ranges[stage.name]}
            dlq = [tp for tp in mine if tp[0] == stage.dlq_topic]
            for tp in dlq:
                self._side.observe(tp, now, exact=mine[tp][1])
            inflow = self._side.inflow(dlq, now) if stage.dlq_topic is not None else None
            views[stage.name] = stage_view(
                stage,
                by_group.get(stage.group_id),
                mine,
                inflow,
                [r for r in reports if r.group == stage.group_id],
                due={tp: dues[tp] for tp in ranges[stage.name] if tp in dues},
                state=(states or {}).get(stage.group_id),
            )
        return PipelineView(
            pipeline=pipeline.name,
            stages=tuple(views.values()),
            end_to_end_lag_seconds=end_to_end(pipeline, views),
        )

    def reconnect(self) -> None:
        """Build new Kafka clients at the next request; the history and caches are kept.

        Call it after a sample failed: after a broker restart an old admin client was seen to
        leave every DescribeConsumerGroups unanswered, sample after sample (``streams.lag.fetch``).
        """
        self._fetch.reconnect()
        if self._replay is not None:
            self._replay.reconnect()

    def close(self) -> None:
        """Close the consumers used to read records (the admin client needs nothing)."""
        self._fetch.close()
        if self._replay is not None:
            self._replay.close()

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
        *,
        replay: Mapping[str, Sequence[ReplayMark]] | None = None,
    ) -> list[GroupLag]:
        """Turn one snapshot into GroupLags, adding it to the history. Public for tests.

        ``replay``: group -> the replay tasks affecting it (``streams.lag.marks``).
        """
        marks = {group: tuple(found) for group, found in (replay or {}).items()}
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
            mine = marks.get(row.info.group, ())
            by_group[row.info.group].append(self._partition(row, read, now, mine))
        return [
            _group_lag(info, by_group[info.group], marks.get(info.group, ()), round(now * 1000))
            for info in infos
        ]

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
            arrival = interpolate_arrival(list(self._ends.get(row.tp, ())), row.committed)
            if arrival is not None:
                return row.lag, max(0.0, now - arrival), "interpolated"
        return row.lag, None, None

    def _partition(
        self,
        row: _Row,
        read: Mapping[tuple[str, int, int], int | None],
        now: float,
        marks: Sequence[ReplayMark],
    ) -> PartitionLag:
        info, tp, off = row.info, row.tp, row.offsets
        lag, lag_seconds, method = self._time_lag(row, read, now)
        history = self._observe(
            info.group, tp, Observation(now, row.committed, off.last_stable_offset, lag)
        )
        owner = info.owners.get(tp)
        status, rule = evaluate_partition(
            history,
            now=now,
            window_s=self.window_s,
            min_samples=self.min_samples,
            owned=owner is not None,
            log_start=off.log_start,
        )
        pending = max(0, off.high_watermark - off.last_stable_offset)
        hanging, held = self._hanging(tp, off, now)
        if held is not None and status is Status.OK:
            status, rule = held
        if row.lag != lag:
            rule += (
                f" (the {row.lag} offsets before the LSO are transaction markers or aborted "
                "records only)"
            )
        velocity = trend(history, now, self.window_s) if lag is not None else None
        eta = lag / -velocity if velocity is not None and velocity < 0 and lag is not None else None
        return PartitionLag(
            group=info.group,
            topic=tp[0],
            partition=tp[1],
            committed=row.committed,
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
            owner=owner,
            explained_by=explain(status, lag, marks, round(now * 1000)) if marks else None,
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

    def _observe(self, group: str, tp: TP, observation: Observation) -> deque[Observation]:
        """Add a sample to the partition's history, dropping what is past two windows."""
        history = self._history.setdefault((group, *tp), deque(maxlen=_HISTORY_MAX_SAMPLES))
        history.append(observation)
        while history and history[0].t < observation.t - _HISTORY_WINDOWS * self.window_s:
            history.popleft()
        return history

    def _hanging(
        self, tp: TP, off: PartitionOffsets, now: float
    ) -> tuple[bool, tuple[Status, str] | None]:
        """Whether an open transaction has held the LSO past the transaction timeout, and the
        WARN that says so (applied where no other rule fired)."""
        since = self._pending_since.get(tp)
        if off.high_watermark <= off.last_stable_offset or since is None:
            return False, None
        held_s = now - since[1]
        if held_s <= self.transaction_timeout_s:
            return False, None
        return True, (
            Status.WARN,
            (
                f"WARN: an open transaction has held the LSO at {off.last_stable_offset} for "
                f"{held_s:.0f} s (> {self.transaction_timeout_s:.0f} s transaction timeout)"
            ),
        )

    def _remember_timestamp(self, key: tuple[str, int, int], timestamp: int) -> None:
        self._timestamps[key] = timestamp
        self._timestamps.move_to_end(key)
        while len(self._timestamps) > _TIMESTAMP_CACHE_SIZE:
            self._timestamps.popitem(last=False)


def _group_lag(
    info: GroupSnapshot,
    partitions: list[PartitionLag],
    marks: tuple[ReplayMark, ...],
    now_ms: int,
) -> GroupLag:
    """A group's roll-up: its worst partition, then the group rules (``evaluate_group``);
    the replay tasks affecting it, and which of them explain its status."""
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
    status, rule = evaluate_group(
        (status, rule), exists=info.exists, members=len(info.members), sum_lag=sum(lags)
    )
    return GroupLag(
        group=info.group,
        state=info.state,
        members=len(info.members),
        partitions=tuple(partitions),
        status=status,
        rule=rule,
        sum_lag=sum(lags),
        max_lag=max(lags, default=0),
        max_lag_seconds=max(seconds, default=None),
        exists=info.exists,
        replay=marks,
        explained_by=explain(status, sum(lags), marks, now_ms) if marks else None,
    )
