"""What the scaling test and bench/scale.py share: a feeder, a worker pool, an ownership watch.

- ``Feeder``: numbered records (``b"0"``, ``b"1"``...; key ``k<n % 50>``) at a steady rate,
  plus bursts on demand, so that ``tests.integration.eos.check_exactly_once`` can check the
  output.
- ``WorkerPool``: worker processes of the copy stage (``tests.integration.pipelines``), one
  per slot, started with ``python -m streams.runtime.worker --slot N`` and stopped with
  SIGTERM, highest slot first (a StatefulSet scaled in by an autoscaler removes its highest
  ordinals).
- ``OwnershipWatch``: describes the consumer group every 100 ms and remembers which input
  partitions a member owned; ``unowned_per_event`` turns that into the seconds each partition
  had no owner after each scale event. A partition is owned when the group is Stable and a
  member's assignment holds it (while a classic group rebalances, its members' assignments are
  revoked and not reported). It also reads the group's committed offsets at each sample:
  ``stalled_per_event`` gives the longest time each partition's commit did not move after each
  event (under a steady feed, the time it was not worked on: also when a stopped static member
  still holds its partitions until its session times out, which its description hides).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, Producer
from confluent_kafka.admin import AdminClient

from tests.integration.eos import start_worker

__all__ = [
    "Feeder",
    "OwnershipWatch",
    "ScaleEvent",
    "WorkerPool",
    "stalled_per_event",
    "unowned_per_event",
]

KEYS = 50


class Feeder(threading.Thread):
    """Numbered records at ``rate`` per second until stopped; ``burst(n)`` adds n at once.

    ``errors`` lists the records whose delivery failed (a run with any is no test of the
    stage: the record is missing from the input). The feeder starts once every partition of
    the topic has a leader: a record produced to a topic created a moment ago was seen lost
    (value 4 of a run, absent from the input topic, its delivery report unread).
    """

    def __init__(self, config: dict[str, Any], topic: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.producer = Producer(
            {
                **config,
                "enable.idempotence": True,
                "linger.ms": 5,
                "on_delivery": self._delivered,
            }
        )
        self.topic = topic
        self.rate = rate
        self.fed = 0
        self.errors: list[str] = []
        self._extra = 0
        self._lock = threading.Lock()
        self.stop = threading.Event()

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self.errors.append(f"{message.value()!r}: {error}")

    def _wait_for_leaders(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            topic = self.producer.list_topics(self.topic, timeout=5).topics.get(self.topic)
            ready = topic is not None and topic.error is None and bool(topic.partitions)
            if ready and all(p.leader >= 0 and p.error is None for p in topic.partitions.values()):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.topic} has partitions without a leader after {timeout_s} s")

    def burst(self, count: int) -> None:
        with self._lock:
            self._extra += count

    def _produce(self) -> None:
        while True:
            try:
                self.producer.produce(
                    self.topic, str(self.fed).encode(), key=f"k{self.fed % KEYS}".encode()
                )
                break
            except BufferError:
                self.producer.poll(0.1)
        self.fed += 1

    def run(self) -> None:
        self._wait_for_leaders()
        began = time.monotonic()
        steady = 0
        while not self.stop.is_set():
            with self._lock:
                extra, self._extra = self._extra, 0
            for _ in range(extra):
                self._produce()
            due = int((time.monotonic() - began) * self.rate)
            while steady < due:
                self._produce()
                steady += 1
            self.producer.poll(0.02)
        if self.producer.flush(120) != 0:
            raise RuntimeError("the feeder could not deliver every record")


@dataclass
class WorkerPool:
    """Worker processes of the copy stage by slot; SIGTERM stops the highest slots first."""

    env: dict[str, str]
    logs: Path
    stage: str = "copy"
    running: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    exits: list[tuple[int, int]] = field(default_factory=list)  # (slot, exit code)

    def scale_to(self, count: int, *, wait_s: float = 90.0) -> None:
        for slot in range(len(self.running), count):
            log = self.logs / f"worker-{slot}.log"
            self.running[slot] = start_worker(self.env, self.stage, slot, log=log)
        stopping = sorted(self.running, reverse=True)[: max(0, len(self.running) - count)]
        for slot in stopping:
            self.running[slot].send_signal(signal.SIGTERM)
        for slot in stopping:
            code = self.running.pop(slot).wait(wait_s)
            self.exits.append((slot, code))

    def crashed(self) -> list[tuple[int, int | None]]:
        """Running slots whose process has exited."""
        return [(s, p.poll()) for s, p in self.running.items() if p.poll() is not None]

    def log_text(self) -> str:
        return "\n".join(
            path.read_text(errors="replace") for path in sorted(self.logs.glob("worker-*.log"))
        )

    def close(self) -> None:
        self.scale_to(0)


@dataclass(frozen=True)
class ScaleEvent:
    at: float  # time.monotonic()
    before: int
    after: int


class OwnershipWatch(threading.Thread):
    """Which input partitions a member of ``group`` owns, every ``interval_s``."""

    def __init__(
        self,
        config: dict[str, Any],
        group: str,
        topic: str,
        partitions: int,
        *,
        interval_s: float = 0.1,
    ) -> None:
        super().__init__(daemon=True)
        self.admin = AdminClient(config)
        self.group = group
        self.topic = topic
        self.partitions = partitions
        self.interval_s = interval_s
        self.samples: list[tuple[float, frozenset[int]]] = []
        self.commits: list[tuple[float, dict[int, int]]] = []
        self.stop = threading.Event()

    def committed(self) -> dict[int, int]:
        request = [ConsumerGroupTopicPartitions(self.group)]
        future = self.admin.list_consumer_group_offsets(request, request_timeout=2)[self.group]
        result = future.result(timeout=3)
        return {
            tp.partition: tp.offset
            for tp in result.topic_partitions or ()
            if tp.topic == self.topic and tp.offset >= 0
        }

    def owned(self) -> frozenset[int]:
        future = self.admin.describe_consumer_groups([self.group], request_timeout=2)[self.group]
        description = future.result(timeout=3)
        if getattr(description.state, "name", "") != "STABLE":
            return frozenset()
        return frozenset(
            tp.partition
            for member in description.members or ()
            if member.assignment is not None
            for tp in member.assignment.topic_partitions
            if tp.topic == self.topic
        )

    def run(self) -> None:
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                owned = self.owned()
            except Exception:  # noqa: BLE001 - a slow answer is an unknown sample: skip it
                owned = None
            if owned is not None:
                self.samples.append((began, owned))
            with contextlib.suppress(Exception):  # as above
                self.commits.append((began, self.committed()))
            self.stop.wait(max(0.0, self.interval_s - (time.monotonic() - began)))

    def all_owned_since(self, since: float) -> bool:
        full = frozenset(range(self.partitions))
        return any(t >= since and owned == full for t, owned in self.samples)


def unowned_per_event(
    samples: list[tuple[float, frozenset[int]]],
    events: list[ScaleEvent],
    partitions: int,
    end: float,
) -> list[dict[str, Any]]:
    """Per scale event: seconds each partition had no owner until the next event (or ``end``).

    Each sample stands for the time until the next one; a partition counts as unowned over
    that time when the sample has no owner for it.
    """
    found = []
    bounds = [*(e.at for e in events[1:]), end]
    for event, until in zip(events, bounds, strict=True):
        seconds = dict.fromkeys(range(partitions), 0.0)
        window = [s for s in samples if event.at <= s[0] < until]
        for (t, owned), (t_next, _) in zip(
            window, [*window[1:], (until, frozenset())], strict=True
        ):
            for partition in range(partitions):
                if partition not in owned:
                    seconds[partition] += t_next - t
        found.append(
            {
                "from_workers": event.before,
                "to_workers": event.after,
                "unowned_s": {str(p): round(s, 2) for p, s in seconds.items()},
                "max_unowned_s": round(max(seconds.values(), default=0.0), 2),
            }
        )
    return found


def stalled_per_event(
    commits: list[tuple[float, dict[int, int]]],
    events: list[ScaleEvent],
    partitions: int,
    end: float,
) -> list[dict[str, Any]]:
    """Per scale event: the longest time each partition's committed offset did not move, from
    the event until the next one (or ``end``)."""
    found = []
    bounds = [*(e.at for e in events[1:]), end]
    for event, until in zip(events, bounds, strict=True):
        longest = dict.fromkeys(range(partitions), 0.0)
        before = [offsets for t, offsets in commits if t < event.at]
        window = [c for c in commits if event.at <= c[0] < until]
        last_seen = window[-1][0] if window else event.at
        for partition in range(partitions):
            last = before[-1].get(partition) if before else None
            since = event.at
            for t, offsets in window:
                offset = offsets.get(partition)
                if offset is not None and offset != last:
                    longest[partition] = max(longest[partition], t - since)
                    since, last = t, offset
            longest[partition] = max(longest[partition], last_seen - since)
        found.append(
            {
                "from_workers": event.before,
                "to_workers": event.after,
                "stalled_s": {str(p): round(s, 2) for p, s in longest.items()},
                "max_stalled_s": round(max(longest.values(), default=0.0), 2),
            }
        )
    return found
