"""Redrive and copy against a raw transactional copy loop: ``python -m bench.replay_throughput``.

Per value size (100 B and 1 KB by default) and round, a fresh pipeline (``bench.replay_pipeline``)
gets N dead letters in its DLQ, and three child processes move them, one after the other:

* ``baseline``: a raw confluent-kafka loop (B2-style): a read_committed consumer assigned at
  offset 0, one transactional producer, each batch's copies and its offsets committed in one
  transaction, with the bounds a stage uses (``StageSettings``: 5,000 records or 100 ms);
  same partition, key, value, headers;
* ``redrive``: ``plan_redrive`` + ``execute`` (``streams dlq redrive --to input --execute``);
* ``copy``: ``plan_copy`` + ``execute_copy`` (``streams replay copy --execute``).

Measured for each, from outside: the destination's last stable offset, polled every 10 ms;
**throughput** = N / (first record committed -> last record committed), **first record** = the
time from the process's launch to its first committed record (Python start-up, imports and, for
redrive and copy, the plan's read of the DLQ included). From the child's own ``getrusage``: CPU
(user + system) per record over its whole life and its peak RSS. Ratios are taken within a round.

Then the rate limiter: a redrive of 3,000 records at ``--rate 1000``; the achieved rate is read
from the written records' timestamps (the time of each write), and its error is achieved/asked - 1.

Then a live stage (``bench.replay_live``): one worker drains a backlog of its input, in windows
of at least ``--live-window-s`` that alternate without and with a redrive into its first retry
tier at ``--live-redrive-rate``, ``--live-pairs`` pairs; the ratio is with / without per pair.

Everything goes to ``bench/results/replay-<UTC timestamp>.json``, and a Markdown table is printed.
Topics are named ``bench-rp-<run id>-...`` and deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bench.measure import sample_process
from bench.replay_live import LiveBench, stable_sum
from bench.replay_pipeline import PARTITIONS, build, dead_letters
from streams.config import KafkaSettings, StageSettings
from streams.replay import (
    CopyRequest,
    RedriveRequest,
    execute,
    execute_copy,
    plan_copy,
    plan_redrive,
)
from streams.topics import ensure_topics

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
_POLL_S = 0.01


# -- the child processes ----------------------------------------------------------------------


def _baseline(name: str, kafka: KafkaSettings) -> int:
    """The raw transactional copy loop: DLQ -> ``<name>.baseline``, same bounds as a stage."""
    settings = StageSettings()
    source, destination = f"{name}.work.dlq", f"{name}.baseline"
    config = kafka.client_config()
    consumer = Consumer(
        {
            **config,
            "group.id": f"{name}.baseline",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "fetch.queue.backoff.ms": 100,  # as a replay task's consumer
        }
    )
    producer = Producer({**config, "transactional.id": f"{name}.baseline", "linger.ms": 5})
    producer.init_transactions(30)
    parts = [TopicPartition(source, p) for p in range(PARTITIONS)]
    ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
    consumer.assign([TopicPartition(source, p, 0) for p in range(PARTITIONS)])
    positions = dict.fromkeys(ends, 0)
    moved, in_batch, began = 0, 0, None
    while any(positions[p] < ends[p] for p in ends):
        for message in consumer.consume(settings.batch_max_records - in_batch, timeout=0.1):
            if message.error() is not None:
                continue
            if in_batch == 0:
                producer.begin_transaction()
                began = time.monotonic()
            producer.produce(
                destination,
                message.value(),
                message.key(),
                partition=message.partition() or 0,
                headers=message.headers(),
            )
            positions[message.partition() or 0] = (message.offset() or 0) + 1
            in_batch += 1
        due = began is not None and (time.monotonic() - began) * 1000 >= settings.batch_max_ms
        done = all(positions[p] >= ends[p] for p in ends)
        if in_batch and (in_batch >= settings.batch_max_records or due or done):
            offsets = [TopicPartition(source, p, o) for p, o in positions.items()]
            producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata())
            producer.commit_transaction()
            moved += in_batch
            in_batch, began = 0, None
    consumer.close()
    return moved


def _child(kind: str, name: str, bootstrap: str, rate: float | None) -> dict[str, Any]:
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    pipeline = build(name)
    moved: int
    if kind == "baseline":
        moved = _baseline(name, kafka)
    elif kind in {"redrive", "redrive-retry"}:
        to = "input" if kind == "redrive" else "first-retry"
        plan = plan_redrive(pipeline, "work", RedriveRequest(to=to, rate=rate), kafka=kafka)
        task = execute(plan, kafka=kafka)
        moved = 0 if task is None else task.moved
    elif kind == "copy":
        request = CopyRequest(
            source=f"{name}.work.dlq", destination=f"{name}.copy", allow_topics=(f"{name}.copy",)
        )
        task = execute_copy(plan_copy(pipeline, request, kafka=kafka, stage="work"), kafka=kafka)
        moved = 0 if task is None else task.moved
    else:
        raise SystemExit(f"unknown child kind {kind}")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over an exec (the parent's size at fork)
    sample = sample_process(os.getpid(), time.monotonic())
    return {
        "moved": moved,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_kib": sample.hwm_kib if sample else None,
    }


# -- measuring from outside -------------------------------------------------------------------


@dataclass
class _Watch:
    """Polls a sum of offsets every 10 ms: when it first rose, when it reached ``target``."""

    read: Callable[[], int]
    target: int
    first_at: float | None = None
    first_value: int = 0
    last_at: float | None = None
    deadline_s: float = 600.0
    stop: threading.Event = field(default_factory=threading.Event)
    base: int = 0

    def __post_init__(self) -> None:
        self.base = self.read()  # before the measured process starts

    def run(self) -> None:
        deadline = time.monotonic() + self.deadline_s
        while not self.stop.is_set() and self.last_at is None and time.monotonic() < deadline:
            value = self.read() - self.base
            now = time.monotonic()
            if value > 0 and self.first_at is None:
                self.first_at, self.first_value = now, value
            if value >= self.target:
                self.last_at = now
            time.sleep(_POLL_S)


def _spawn(
    kind: str, name: str, bootstrap: str, rate: float | None, log: Path
) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "bench.replay_throughput", "--child", kind, name, bootstrap]
    command.append(str(rate) if rate else "")
    with log.open("ab") as err:
        return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)


def _run_child(
    kind: str, name: str, bootstrap: str, *, destination: str, count: int, log: Path
) -> dict[str, Any]:
    config = KafkaSettings(bootstrap_servers=bootstrap).client_config()
    watch = _Watch(stable_sum(config, destination), count)
    watching = threading.Thread(target=watch.run, daemon=True)
    watching.start()
    launched = time.monotonic()
    process = _spawn(kind, name, bootstrap, None, log)
    out, _ = process.communicate(timeout=600)
    watching.join(timeout=30)
    watch.stop.set()
    if process.returncode != 0 or watch.first_at is None or watch.last_at is None:
        raise RuntimeError(f"{kind} failed (exit {process.returncode}); see {log}")
    child = json.loads(out.strip().splitlines()[-1])
    window = watch.last_at - watch.first_at
    return {
        "kind": kind,
        "records": count,
        "moved": child["moved"],
        # the first committed batch is outside the window: count only what came after it
        "throughput_rps": (count - watch.first_value) / window if window > 0 else None,
        "first_record_s": watch.first_at - launched,
        "wall_s": watch.last_at - launched,
        "cpu_us_per_record": child["cpu_s"] * 1e6 / count,
        "peak_rss_mib": child["peak_rss_kib"] / 1024,
    }


# -- the scenarios ----------------------------------------------------------------------------


class _Run:
    def __init__(self, bootstrap: str, workdir: Path) -> None:
        self.bootstrap = bootstrap
        self.kafka = KafkaSettings(bootstrap_servers=bootstrap)
        self.config = self.kafka.client_config()
        self.run_id = uuid.uuid4().hex[:8]
        self.workdir = workdir
        self.topics: list[str] = []
        self.log = workdir / "children.log"

    def pipeline(self, label: str, *extra: str) -> str:
        name = f"bench-rp-{self.run_id}-{label}"
        built = build(name)
        ensure_topics(built, kafka=self.kafka)
        self.topics += [spec.name for spec in built.topic_specs() if spec.name.startswith(name)]
        if extra:
            admin = AdminClient(self.config)
            new = [NewTopic(f"{name}.{t}", PARTITIONS, 1) for t in extra]
            for future in admin.create_topics(new).values():
                future.result(timeout=30)
            self.topics += [f"{name}.{t}" for t in extra]
        return name

    def cleanup(self) -> None:
        if self.topics:
            admin = AdminClient(self.config)
            for future in admin.delete_topics(self.topics).values():
                with contextlib.suppress(Exception):  # best effort at the end
                    future.result(timeout=30)

    def throughput(self, size: int, records: int, round_no: int) -> dict[str, Any]:
        name = self.pipeline(f"s{size}r{round_no}", "baseline", "copy")
        dead_letters(self.config, name, records, size)
        runs = {
            kind: _run_child(
                kind, name, self.bootstrap, destination=destination, count=records, log=self.log
            )
            for kind, destination in (
                ("baseline", f"{name}.baseline"),
                ("redrive", f"{name}.in"),
                ("copy", f"{name}.copy"),
            )
        }
        base = runs["baseline"]["throughput_rps"]
        return {
            "size": size,
            "round": round_no,
            "runs": runs,
            "ratio_redrive": runs["redrive"]["throughput_rps"] / base,
            "ratio_copy": runs["copy"]["throughput_rps"] / base,
        }

    def rate(self, asked: float, records: int) -> dict[str, Any]:
        name = self.pipeline("rate")
        dead_letters(self.config, name, records, 100)
        process = _spawn("redrive", name, self.bootstrap, asked, self.log)
        process.communicate(timeout=600)
        if process.returncode != 0:
            raise RuntimeError(f"the rate run failed; see {self.log}")
        stamps = sorted(m.timestamp()[1] for m in _read_all(self.config, f"{name}.in"))
        span_s = (stamps[-1] - stamps[0]) / 1000
        achieved = (len(stamps) - 1) / span_s
        return {
            "asked": asked,
            "records": len(stamps),
            "achieved_rps": achieved,
            "error": achieved / asked - 1,
        }


def _read_all(config: dict[str, Any], topic: str) -> list[Any]:
    consumer = Consumer(
        {
            **config,
            "group.id": f"bench-read-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    found: list[Any] = []
    idle = 0
    while idle < 4:
        batch = consumer.consume(1000, timeout=0.5)
        idle = 0 if batch else idle + 1
        found.extend(m for m in batch if m.error() is None)
    consumer.close()
    return found


# -- the command ------------------------------------------------------------------------------


def _table(result: dict[str, Any]) -> str:
    lines = [
        "| size | contender | rec/s | ratio | CPU µs/rec | peak RSS MiB | first record s |",
        "|---|---|---|---|---|---|---|",
    ]
    for size in result["sizes"]:
        rounds = [r for r in result["throughput"] if r["size"] == size]
        for kind in ("baseline", "redrive", "copy"):
            runs = [r["runs"][kind] for r in rounds]
            rps = median(r["throughput_rps"] for r in runs)
            ratio = (
                "1" if kind == "baseline" else f"{median(r[f'ratio_{kind}'] for r in rounds):.2f}"
            )
            lines.append(
                f"| {size} B | {kind} | {rps:,.0f} | {ratio} "
                f"| {median(r['cpu_us_per_record'] for r in runs):.1f} "
                f"| {max(r['peak_rss_mib'] for r in runs):.0f} "
                f"| {median(r['first_record_s'] for r in runs):.2f} |"
            )
    lines.append("")
    for size in result["sizes"]:
        rounds = [r for r in result["throughput"] if r["size"] == size]
        lines.append(
            f"per-round ratios, {size} B: redrive "
            + " ".join(f"{r['ratio_redrive']:.2f}" for r in rounds)
            + ", copy "
            + " ".join(f"{r['ratio_copy']:.2f}" for r in rounds)
        )
    rate = result["rate"]
    lines += [
        "",
        (
            f"rate limiter: asked {rate['asked']:.0f}/s, achieved {rate['achieved_rps']:.0f}/s "
            f"(error {rate['error']:+.1%})"
        ),
    ]
    live = result.get("live")
    if live is not None:
        pairs = ", ".join(
            f"{r['with_redrive']['throughput_rps']:,.0f} / "
            f"{r['without']['throughput_rps']:,.0f} = {r['ratio']:.2f}"
            for r in live["pairs"]
        )
        lines.append(
            f"live stage ({len(live['pairs'])} pairs of windows of >= "
            f"{live['window_s_asked']:.0f} s), with / without a redrive at "
            f"{live['redrive_rate']:.0f}/s into it: {pairs} (median {live['ratio']:.2f})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--child":
        kind, name, bootstrap, rate = args[1:5]
        print(json.dumps(_child(kind, name, bootstrap, float(rate) if rate else None)))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.replay_throughput")
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--records", type=int, default=20_000, help="dead letters per size")
    parser.add_argument("--sizes", default="100,1000", help="value sizes in bytes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1000.0, help="the limiter's test rate")
    parser.add_argument("--rate-records", type=int, default=3000)
    parser.add_argument("--live-window-s", type=float, default=20.0, help="the least per window")
    parser.add_argument("--live-pairs", type=int, default=2, help="without/with pairs")
    parser.add_argument("--live-redrive-rate", type=float, default=2000.0)
    options = parser.parse_args(args)
    sizes = [int(s) for s in options.sizes.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="streams-bench-replay-"))
    run = _Run(options.bootstrap, workdir)
    started = datetime.now(UTC)
    try:
        result: dict[str, Any] = {
            "command": "python -m bench.replay_throughput " + " ".join(args),
            "started": started.isoformat(),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "settings": {**vars(options), "stage": StageSettings().model_dump()},
            "sizes": sizes,
            "throughput": [
                run.throughput(size, options.records, r)
                for r in range(options.rounds)
                for size in sizes
            ],
        }
        result["rate"] = run.rate(options.rate, options.rate_records)
        if options.live_pairs:
            live = LiveBench(
                bootstrap=run.bootstrap,
                config=run.config,
                pipeline=run.pipeline,
                spawn=lambda kind, name, rate: _spawn(kind, name, run.bootstrap, rate, run.log),
                log=run.log,
            )
            result["live"] = live.run(
                window_s=options.live_window_s,
                pairs=options.live_pairs,
                rate=options.live_redrive_rate,
                size=100,
            )
    finally:
        run.cleanup()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"replay-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(_table(result))
    print(f"\nwritten to {path.relative_to(ROOT)} (logs in {workdir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
