"""A raw-stage worker's RSS over a long run under steady load: ``python -m bench.rss_curve``.

Runs a one-stage raw copy (100-byte values, keys from 128, 4 partitions, exactly once, the
shipped settings) as ``streams run bench.rss_curve:pipeline --stage copy`` (a supervisor and
one worker process, as in one pod) for ``--duration-s`` seconds, while this process produces
``--rate`` records per second into its input and, every ``--burst-every-s`` seconds (the
first at half that), a burst of ``--burst`` records at once: the benchmark's load, a backlog
drained as fast as the worker can, which fills librdkafka's prefetch queue to its bound. So the
curve shows both the steady state and the worst case, once per period.

Every ``--sample-every-s`` it reads VmRSS (and VmHWM) of both processes from /proc; every 5 s
the group's committed offsets (the lag: produced minus committed). It writes
``bench/results/rss_curve-<UTC>.json``: the curve, and for the worker the peak, the first and
last minute's maximum and median, and the least-squares slope of RSS after the first minute.

It needs the broker at 127.0.0.1:19092 (``--bootstrap``); the topics it makes are deleted at
the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.measure import first_child, sample_process
from bench.run import describe_worktree
from streams import Output, Pipeline, Record, codecs

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
_PARTITIONS = 4
_KEYS = 128
_VALUE_BYTES = 100
_LAG_EVERY_S = 5.0
_TICK_S = 0.01


def copy(record: Record[bytes]) -> Output:
    """The identity copy of the benchmark's raw workload."""
    return Output(record.value)


# `streams run bench.rss_curve:pipeline` in the worker builds the same pipeline; this module
# imports nothing a worker would not load anyway, so that the worker's RSS is its own.
_NAME = os.environ.get("RSS_CURVE_PIPELINE", "rsscurve")
pipeline = Pipeline(_NAME, partitions=_PARTITIONS)
pipeline.add_stage(
    "copy", copy, inputs=[f"{_NAME}.in"], input=codecs.raw(), outputs={f"{_NAME}.out": codecs.raw()}
)


class _Load:
    """The producer: ``rate`` records/s, plus ``burst`` records at once every period."""

    def __init__(self, bootstrap: str, topic: str, seed: int) -> None:
        from confluent_kafka import Producer  # noqa: PLC0415 - the worker does not need it

        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        self.topic = topic
        rng = random.Random(seed)
        self._tails = [rng.randbytes(_VALUE_BYTES - 8) for _ in range(1024)]
        self._keys = [f"k{i:03d}".encode() for i in range(_KEYS)]
        self.produced = 0

    def produce(self, count: int) -> None:
        produce = self.producer.produce
        for _ in range(count):
            n = self.produced
            value = n.to_bytes(8, "big") + self._tails[n % 1024]
            while True:
                try:
                    produce(self.topic, value, self._keys[n % _KEYS])
                    break
                except BufferError:
                    self.producer.poll(0.05)
            self.produced += 1
        self.producer.poll(0)


def _sampler(pids: dict[str, int], every_s: float, t0: float, stop: threading.Event) -> list[Any]:
    curve: list[Any] = []

    def loop() -> None:
        next_at = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            point: dict[str, Any] = {"t_s": round(now - t0, 2)}
            for role, pid in pids.items():
                got = sample_process(pid, now)
                if got is not None:
                    point[f"{role}_rss_mib"] = round(got.rss_kib / 1024, 1)
                    point[f"{role}_hwm_mib"] = round(got.hwm_kib / 1024, 1)
                    point[f"{role}_cpu_s"] = round(got.cpu_s, 2)
            curve.append(point)
            next_at += every_s
            stop.wait(max(0.0, next_at - time.monotonic()))

    threading.Thread(target=loop, name="rss-sampler", daemon=True).start()
    return curve


def _slope_mib_per_min(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 2:
        return None
    xs = [t for t, _ in points]
    ys = [r for _, r in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mean_x) ** 2 for x in xs)
    if den == 0:
        return None
    return 60 * sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / den


def _window(curve: list[dict[str, Any]], key: str, start: float, end: float) -> dict[str, Any]:
    values = [p[key] for p in curve if start <= p["t_s"] < end and key in p]
    if not values:
        return {}
    return {"max_mib": max(values), "median_mib": statistics.median(values)}


def _summary(curve: list[dict[str, Any]], role: str, duration: float) -> dict[str, Any]:
    key = f"{role}_rss_mib"
    values = [p[key] for p in curve if key in p]
    after_first = [(p["t_s"], p[key]) for p in curve if key in p and p["t_s"] >= 60]
    first = _window(curve, key, 0, 60)
    last = _window(curve, key, duration - 60, duration + 1)
    slope = _slope_mib_per_min(after_first)
    return {
        "peak_rss_mib": max(values) if values else None,
        "high_water_mib": max((p.get(f"{role}_hwm_mib", 0) for p in curve), default=None),
        "first_minute": first,
        "last_minute": last,
        "last_minus_first_minute_max_mib": (
            round(last["max_mib"] - first["max_mib"], 1) if first and last else None
        ),
        "slope_after_first_minute_mib_per_min": None if slope is None else round(slope, 3),
    }


def main(argv: list[str] | None = None) -> int:  # noqa: C901, PLR0915 - one measurement, in order
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=300.0)
    parser.add_argument("--rate", type=int, default=10_000, help="steady records per second")
    parser.add_argument("--burst", type=int, default=300_000, help="records per burst")
    parser.add_argument("--burst-every-s", type=float, default=60.0)
    parser.add_argument("--sample-every-s", type=float, default=1.0)
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from confluent_kafka import Consumer, TopicPartition  # noqa: PLC0415
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    from streams.config import KafkaSettings  # noqa: PLC0415
    from streams.topics import ensure_topics  # noqa: PLC0415

    started = datetime.now(UTC)
    worktree = describe_worktree()  # the code the worker runs is what is on disk when it starts
    name = f"rsscurve{uuid.uuid4().hex[:8]}"
    os.environ["RSS_CURVE_PIPELINE"] = name
    built = Pipeline(name, partitions=_PARTITIONS)
    stage = built.add_stage(
        "copy",
        copy,
        inputs=[f"{name}.in"],
        input=codecs.raw(),
        outputs={f"{name}.out": codecs.raw()},
    )
    kafka = KafkaSettings(bootstrap_servers=args.bootstrap)
    ensure_topics(built, kafka=kafka)
    topics = [spec.name for spec in built.topic_specs()]
    source = f"{name}.in"
    load = _Load(args.bootstrap, source, args.seed)
    lag_reader = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": stage.group_id,
            "enable.auto.commit": False,
        }
    )
    partitions = [TopicPartition(source, p) for p in range(_PARTITIONS)]

    def committed() -> int:
        offsets = lag_reader.committed(partitions, timeout=10)
        return sum(max(tp.offset, 0) for tp in offsets)

    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "RSS_CURVE_PIPELINE": name,
        "STREAMS_BOOTSTRAP_SERVERS": args.bootstrap,
    }
    streams_bin = str(Path(sys.executable).with_name("streams"))
    command = [streams_bin, "run", "bench.rss_curve:pipeline", "--stage", "copy"]
    child = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    stop = threading.Event()
    lags: list[dict[str, Any]] = []
    bursts: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 60
        worker = first_child(child.pid, timeout_s=60)
        load.produce(1)  # one record through: the worker has joined and committed once
        load.producer.flush(10)
        while committed() < load.produced:
            if time.monotonic() > deadline:
                raise SystemExit("the worker did not commit its first record within 60 s")
            time.sleep(0.5)

        t0 = time.monotonic()
        curve = _sampler({"worker": worker, "supervisor": child.pid}, args.sample_every_s, t0, stop)
        end = t0 + args.duration_s
        next_burst = t0 + args.burst_every_s / 2
        next_lag = t0
        next_tick = t0
        while (now := time.monotonic()) < end:
            if now >= next_burst:
                bursts.append({"t_s": round(now - t0, 2), "records": args.burst})
                load.produce(args.burst)
                next_burst += args.burst_every_s
            if now >= next_lag:
                lags.append({"t_s": round(now - t0, 2), "lag": load.produced - committed()})
                next_lag += _LAG_EVERY_S
            due = round(args.rate * (time.monotonic() - t0)) - (
                load.produced - 1 - args.burst * len(bursts)
            )
            if due > 0:
                load.produce(due)
            next_tick += _TICK_S
            time.sleep(max(0.0, next_tick - time.monotonic()))
        stop.set()
        load.producer.flush(60)
        drained_by = time.monotonic() + 120
        while (lag := load.produced - committed()) > 0 and time.monotonic() < drained_by:
            time.sleep(1.0)
        lags.append({"t_s": round(time.monotonic() - t0, 2), "lag": lag, "after_load": True})
    finally:
        stop.set()
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
        lag_reader.close()
        admin = AdminClient({"bootstrap.servers": args.bootstrap})
        for future in admin.delete_topics(topics, operation_timeout=30).values():
            future.result(timeout=30)

    result = {
        "benchmark": "rss_curve",
        "command": " ".join(["python -m bench.rss_curve", *(argv or sys.argv[1:])]),
        "started_utc": started.isoformat(),
        "stage": "raw copy, 100-byte values, 4 partitions, exactly once, shipped settings",
        "processes": "streams run: one supervisor and one worker process",
        "load": {
            "rate_per_s": args.rate,
            "burst_records": args.burst,
            "burst_every_s": args.burst_every_s,
            "duration_s": args.duration_s,
            "records_produced": load.produced,
        },
        "worker": _summary(curve, "worker", args.duration_s),
        "supervisor": _summary(curve, "supervisor", args.duration_s),
        "bursts": bursts,
        "lag": lags,
        "curve": curve,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        },
        "worktree": worktree,
    }
    args.results_dir.mkdir(exist_ok=True)
    path = args.results_dir / f"rss_curve-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"worker": result["worker"], "lag_at_end": lags[-1]}, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
