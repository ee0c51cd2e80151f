"""A live stage's throughput with and without a redrive into it (``bench.replay_throughput``).

One worker of the benchmark's stage (``bench.replay_pipeline``) drains a backlog of 100 B
records from its input. Windows alternate, *without* then *with* a redrive of dead letters into
the stage's first retry tier at ``--live-redrive-rate``, for ``--live-pairs`` pairs; each window
has a fresh pipeline. The backlog is sized so that a window lasts at least ``--live-window-s``:
a calibration run (not counted) measures the stage's rate first.

In a *with* window the redrive starts first, and the stage once the redrive's first record is
committed (its destination's last stable offset, polled), so that the redrive's own start-up
(imports, the ledger, the plan's read of the DLQ) is not part of the window. Measured, from a
10 ms time series of the stage's committed input offsets: the stage's rate from its first
commit to its last, in a *with* window only while the redrive was still writing (it is sized
to outlast the stage). The ratio is with / without within each pair.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from bench.replay_pipeline import PARTITIONS, build, dead_letters, inputs

__all__ = ["LiveBench", "Series"]

ROOT = Path(__file__).resolve().parent.parent
_POLL_S = 0.01
# The redrive is given this much more than the window: the stage's own start-up (a few
# seconds) comes after the redrive's first record.
_REDRIVE_MARGIN_S = 15.0
# Headroom on the calibrated backlog: the windows must not come out shorter than asked.
_BACKLOG_MARGIN = 1.3


@dataclass
class Series:
    """A sum of offsets sampled every 10 ms, from the start until ``target`` (or a stop)."""

    read: Callable[[], int]
    target: int | None = None
    samples: list[tuple[float, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    base: int = 0

    def __post_init__(self) -> None:
        self.base = self.read()

    def run(self, deadline_s: float = 900.0) -> None:
        deadline = time.monotonic() + deadline_s
        while not self.stop.is_set() and time.monotonic() < deadline:
            value = self.read() - self.base
            self.samples.append((time.monotonic(), value))
            if self.target is not None and value >= self.target:
                return
            time.sleep(_POLL_S)

    def first_rise(self) -> tuple[float, int] | None:
        return next(((t, v) for t, v in self.samples if v > 0), None)

    def reached(self, value: int) -> float | None:
        return next((t for t, v in self.samples if v >= value), None)

    def at(self, when: float) -> int:
        """The value last sampled at or before ``when``."""
        times = [t for t, _v in self.samples]
        index = bisect_right(times, when) - 1
        return self.samples[index][1] if index >= 0 else 0


def _committed_sum(config: dict[str, Any], group: str, topic: str) -> Callable[[], int]:
    consumer = Consumer({**config, "group.id": group, "enable.auto.commit": False})
    parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]

    def read() -> int:
        try:
            return sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
        except Exception:  # noqa: BLE001 - an unstable answer while a transaction is open
            return 0

    return read


def stable_sum(config: dict[str, Any], topic: str) -> Callable[[], int]:
    """A reader of the sum of ``topic``'s end offsets, as a read_committed consumer gets them."""
    consumer = Consumer({**config, "group.id": "bench-lso", "isolation.level": "read_committed"})

    def read() -> int:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
            for p in range(PARTITIONS)
        )

    return read


class LiveBench:
    """The live-stage scenario; ``pipeline(label)`` creates (and registers) a fresh pipeline."""

    def __init__(
        self,
        *,
        bootstrap: str,
        config: dict[str, Any],
        pipeline: Callable[[str], str],
        spawn: Callable[[str, str, float | None], subprocess.Popen[str]],
        log: Path,
    ) -> None:
        self._bootstrap = bootstrap
        self._config = config
        self._pipeline = pipeline
        self._spawn = spawn
        self._log = log

    def run(self, *, window_s: float, pairs: int, rate: float, size: int) -> dict[str, Any]:
        calibration = self._window("livecal", 100_000, 0, rate, size)
        records = int(calibration["throughput_rps"] * window_s * _BACKLOG_MARGIN)
        redrive = int(rate * (window_s * _BACKLOG_MARGIN + _REDRIVE_MARGIN_S))
        rounds = []
        for pair in range(pairs):
            without = self._window(f"live{pair}a", records, 0, rate, size)
            with_redrive = self._window(f"live{pair}b", records, redrive, rate, size)
            rounds.append(
                {
                    "without": without,
                    "with_redrive": with_redrive,
                    "ratio": with_redrive["throughput_rps"] / without["throughput_rps"],
                }
            )
        return {
            "records": records,
            "size": size,
            "redrive_records": redrive,
            "redrive_rate": rate,
            "window_s_asked": window_s,
            "calibration": calibration,
            "pairs": rounds,
            "ratio": median(r["ratio"] for r in rounds),
        }

    def _window(
        self, label: str, records: int, redrive: int, rate: float, size: int
    ) -> dict[str, Any]:
        name = self._pipeline(label)
        inputs(self._config, name, records, size)
        if redrive:
            dead_letters(self._config, name, redrive, size)
        stage = Series(_committed_sum(self._config, f"{name}.work", f"{name}.in"), records)
        retry_topic = build(name).get("work").retry_topics[0]
        moved = Series(stable_sum(self._config, retry_topic))
        env = {
            **os.environ,
            "BENCH_REPLAY_NAME": name,
            "STREAMS_BOOTSTRAP_SERVERS": self._bootstrap,
        }
        command = [sys.executable, "-m", "streams.runtime.worker", "bench.replay_pipeline:pipeline"]
        watching = threading.Thread(target=moved.run, daemon=True)
        watching.start()
        mover = None
        if redrive:
            # the redrive first, and the stage once it writes: the whole window is "with"
            mover = self._spawn("redrive-retry", name, rate)
            _wait_for(lambda: moved.first_rise() is not None, what="the redrive's first record")
        with self._log.open("ab") as err:
            worker = subprocess.Popen(
                [*command, "--stage", "work", "--slot", "0"],
                cwd=ROOT,
                env=env,
                stdout=err,
                stderr=err,
            )
        stage.run()  # returns once every input is committed
        redrive_running = mover is not None and mover.poll() is None
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        if mover is not None:
            mover.send_signal(signal.SIGTERM)  # what it has not moved yet is not needed
            mover.communicate(timeout=120)
        moved.stop.set()
        watching.join(timeout=30)
        return _window_result(stage, moved if redrive else None, records, redrive_running)


def _wait_for(done: Callable[[], bool], *, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no sign of {what} within {timeout_s:.0f} s")
        time.sleep(_POLL_S)


def _window_result(
    stage: Series, moved: Series | None, records: int, redrive_running: bool
) -> dict[str, Any]:
    first = stage.first_rise()
    last = stage.reached(records)
    if first is None or last is None:
        raise RuntimeError("the live stage did not finish")
    begin, end = first[0], last
    found: dict[str, Any] = {"window_s": end - begin, "redrive_still_running_at_end": False}
    if moved is not None:
        writing = moved.first_rise()
        if writing is None:
            raise RuntimeError("the redrive wrote nothing while the stage ran")
        begin = max(begin, writing[0])
        final = moved.samples[-1][1]
        done = moved.reached(final)
        if done is not None and not redrive_running:
            end = min(end, done)
        found["redrive_moved_in_window"] = moved.at(end) - moved.at(begin)
        found["redrive_still_running_at_end"] = redrive_running
        found["whole_window_rps"] = (records - first[1]) / (last - first[0])
    found["measured_s"] = end - begin
    found["throughput_rps"] = (stage.at(end) - stage.at(begin)) / (end - begin)
    return found
