"""Read the workers' counters from the compacted topic ``_streams.stats``.

Every worker publishes one JSON snapshot per ``STREAMS_STAGE_STATS_INTERVAL_S`` (default 5 s)
under the key ``<group>/<slot>`` (``streams.runtime.publish``). The reader is a plain consumer
*assigned* to every partition of the topic from the beginning (no group join, no commits, so it
never shows up as a consumer group), and keeps the latest record per key.

Stale workers: a worker that stopped leaves its last record in the compacted topic forever.
A record is dropped from the view when its ``ts_ms`` is older than ``3 x stats interval``: the
record's own ``stats_interval_s`` field when it carries one, else the ``stale_after_s`` the
reader was given (default 3 x ``StageSettings().stats_interval_s`` of the monitor's own
environment, 15 s with the defaults). Run the monitor with the same
``STREAMS_STAGE_STATS_INTERVAL_S`` as the workers, or pass ``stale_after_s``.

When the topic does not exist yet (no ``streams topics create`` on this cluster) the reader
reports no workers and looks again at the next poll.

Supervisors publish to the same topic (key ``<group>/supervisor@<host>:<pid>``, ``kind``
``supervisor``, ``streams.stats.SupervisorReport``): ``supervisors()`` returns those at most
three of their own intervals old; they never count as workers. ``catch_up()`` reads to the
topic's end, for a one-shot reader such as ``streams lag --pipeline``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streams.config import KafkaSettings, StageSettings
from streams.pipeline import STATS_TOPIC
from streams.stats import SUPERVISOR_KIND, SupervisorReport

__all__ = [
    "BREAKER_STATES",
    "StatsReader",
    "WorkerStats",
    "live_workers",
    "parse_worker_stats",
]

log = logging.getLogger("streams.monitor")

# value of streams_dependency_breaker_state, as streams.dependency's own gauge
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
# missed publications tolerated before a worker is considered gone
STALE_INTERVALS = 3
# records read per consume() call; the topic is small (one live record per worker)
_BATCH = 1000


@dataclass(frozen=True)
class WorkerStats:
    """The latest snapshot one worker published."""

    group: str
    slot: str
    ts_ms: int
    counters: dict[str, float]
    dependencies: tuple[dict[str, Any], ...] = ()
    host: str = ""
    pid: int = 0
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def key(self) -> str:
        return f"{self.group}/{self.slot}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "slot": self.slot,
            "ts_ms": self.ts_ms,
            "host": self.host,
            "pid": self.pid,
            **self.counters,
            "dependencies": list(self.dependencies),
        }


def parse_worker_stats(key: str, value: bytes) -> WorkerStats | None:
    """A ``WorkerStats`` from one ``_streams.stats`` record, or None if it is not one."""
    try:
        payload = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(payload, dict) or payload.get("kind") == SUPERVISOR_KIND:
        return None
    group, _, slot = key.rpartition("/")
    group = str(payload.get("group") or group or "unknown")
    counters = {
        name: float(number)
        for name, number in payload.items()
        if isinstance(number, int | float) and not isinstance(number, bool)
    }
    dependencies = tuple(d for d in payload.get("dependencies") or () if isinstance(d, dict))
    return WorkerStats(
        group=group,
        slot=str(payload.get("slot", slot or "0")),
        ts_ms=int(counters.pop("ts_ms", 0)),
        counters={k: v for k, v in counters.items() if k not in {"pid", "slot"}},
        dependencies=dependencies,
        host=str(payload.get("host", "")),
        pid=int(payload.get("pid", 0) or 0),
        raw=payload,
    )


def _supervisor_report(value: bytes) -> SupervisorReport | None:
    try:
        payload = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    return SupervisorReport.parse(payload) if isinstance(payload, dict) else None


def live_workers(
    latest: Iterable[WorkerStats], now_s: float, stale_after_s: float
) -> list[WorkerStats]:
    """The snapshots recent enough to count, by group and slot (see the module docstring)."""
    live = []
    for stats in latest:
        interval = stats.counters.get("stats_interval_s")
        limit_s = STALE_INTERVALS * interval if interval else stale_after_s
        if now_s * 1000 - stats.ts_ms <= limit_s * 1000:
            live.append(stats)
    return sorted(live, key=lambda s: (s.group, s.slot))


class StatsReader:
    """Latest snapshot per worker key, refreshed by ``poll()``; not thread-safe."""

    def __init__(
        self,
        kafka: KafkaSettings | None = None,
        *,
        topic: str = STATS_TOPIC,
        stale_after_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = kafka or KafkaSettings()
        self._topic = topic
        self._clock = clock
        self.stale_after_s = (
            stale_after_s
            if stale_after_s is not None
            else STALE_INTERVALS * StageSettings().stats_interval_s
        )
        self._consumer = self._new_consumer()
        self._assigned = False
        self._latest: dict[str, WorkerStats] = {}
        self._supervisors: dict[str, SupervisorReport] = {}
        self.topic_missing = False

    def _new_consumer(self) -> Consumer:
        return Consumer(
            {
                **self._settings.client_config(),
                # never joined nor committed: the id only satisfies the client
                "group.id": f"_streams.monitor.{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                "auto.offset.reset": "earliest",
            }
        )

    def reconnect(self) -> None:
        """A new consumer, reading the topic from the start again; the records read are kept.

        The monitor calls this after a failed sample, as it rebuilds its other Kafka clients.
        """
        old, self._consumer = self._consumer, self._new_consumer()
        self._assigned = False
        old.close()

    def _assign(self) -> bool:
        try:
            metadata = self._consumer.list_topics(self._topic, timeout=5)
        except KafkaException as error:
            log.warning("cannot read %s metadata: %s", self._topic, error)
            return False
        topic = metadata.topics.get(self._topic)
        if topic is None or topic.error is not None or not topic.partitions:
            self.topic_missing = True
            return False
        self.topic_missing = False
        self._consumer.assign([TopicPartition(self._topic, p, 0) for p in sorted(topic.partitions)])
        self._assigned = True
        return True

    def poll(self, timeout_s: float = 0.2) -> int:
        """Read what the topic holds now; the number of records read."""
        if not self._assigned and not self._assign():
            return 0
        read = 0
        while True:
            batch = self._consumer.consume(_BATCH, timeout=timeout_s)
            for message in batch:
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:  # noqa: SLF001 - public constant
                        log.warning("reading %s: %s", self._topic, error)
                    continue
                read += 1
                self._take(message)
            if len(batch) < _BATCH:
                return read

    def _take(self, message: Any) -> None:
        key = (message.key() or b"").decode(errors="replace")
        value = message.value()
        if value is None:  # a tombstone: the record was deleted
            self._latest.pop(key, None)
            self._supervisors.pop(key, None)
            return
        supervisor = _supervisor_report(value)
        if supervisor is not None:
            self._supervisors[key] = supervisor
            return
        stats = parse_worker_stats(key, value)
        if stats is not None:
            self._latest[key] = stats

    def catch_up(self, timeout_s: float = 5.0) -> int:
        """Read until the end the topic had when called (or ``timeout_s``); records read."""
        deadline = time.monotonic() + timeout_s
        if not self._assigned and not self._assign():
            return 0
        ends = {}
        for tp in self._consumer.assignment():
            _low, high = self._consumer.get_watermark_offsets(tp, timeout=timeout_s)
            ends[tp.partition] = high
        read = 0
        while time.monotonic() < deadline:
            positions = self._consumer.position(self._consumer.assignment())
            if all(p.offset >= ends.get(p.partition, 0) for p in positions):
                break
            read += self.poll(timeout_s=0.1)
        return read

    def add(self, stats: WorkerStats) -> None:
        """Record a snapshot directly (tests, or a caller with its own source)."""
        self._latest[stats.key] = stats

    def workers(self) -> list[WorkerStats]:
        """Live workers: those whose latest record is recent enough (see the module docstring)."""
        return live_workers(self._latest.values(), self._clock(), self.stale_after_s)

    def supervisors(self) -> list[SupervisorReport]:
        """Live supervisors' records (at most three of their intervals old), by group."""
        now = self._clock()
        live = [r for r in self._supervisors.values() if r.is_live(now)]
        return sorted(live, key=lambda r: (r.group, r.host, r.pid))

    def close(self) -> None:
        self._consumer.close()
