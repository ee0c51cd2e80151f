"""The read_committed stall after a SIGKILLed worker: stable slot vs a new transactional.id.

A `streams run --stage copy --slot-from-hostname` (``HOSTNAME=enrich-0``, static membership,
as a StatefulSet pod) copies a backlog with 4 s transactions; it is SIGKILLed (workers, then
the supervisor) while a transaction is open, and a new `streams run` starts at once:

- ``stable``: with the same hostname, so the same slot and ``transactional.id``: its
  ``init_transactions()`` aborts the dead transaction;
- ``new-slot``: as ``enrich-1``, a new ``transactional.id``: the dead transaction holds the
  output's last stable offset until the coordinator times it out
  (``transaction.timeout.ms``, set to 15 s here; expired transactions are looked for every
  10 s by default).

Measured per round: seconds from the kill (and from the restart's launch, which includes two
interpreter starts) until the LSO moves on every partition the dead transaction held; and the
resident memory (VmRSS) of the worker and of the supervisor while the stage runs.

    .venv/bin/python -m bench.slot_stall [--rounds 2] [--bootstrap 127.0.0.1:19092]

Writes ``bench/results/slot_stall-<UTC timestamp>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, IsolationLevel, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streams.config import KafkaSettings
from streams.kafka import admin as admin_specs
from streams.topics import ensure_topics
from tests.integration.pipelines import build_copy

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
STREAMS = str(Path(sys.executable).with_name("streams"))
PARTITIONS = 4
RECORDS = 40_000
TRANSACTION_TIMEOUT_MS = 15_000


class Round:
    """One kill and restart over fresh topics."""

    def __init__(self, bootstrap: str, log_dir: Path) -> None:
        self.bootstrap = bootstrap
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        tag = uuid.uuid4().hex[:8]
        self.pipeline = f"bench-slots-{tag}"
        self.source, self.sink = f"bench.slots.{tag}.in", f"bench.slots.{tag}.out"
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.env = {
            **os.environ,
            "TEST_PIPELINE": self.pipeline,
            "TEST_INPUT": self.source,
            "TEST_OUTPUT": self.sink,
            "TEST_DELAY_MS": "4",
            "STREAMS_BOOTSTRAP_SERVERS": bootstrap,
            "STREAMS_STAGE_SESSION_TIMEOUT_MS": "6000",
            "STREAMS_STAGE_STATIC_MEMBERSHIP": "true",
            "STREAMS_STAGE_TRANSACTION_TIMEOUT_MS": str(TRANSACTION_TIMEOUT_MS),
            "STREAMS_STAGE_BATCH_MAX_MS": "4000",
        }

    def setup(self) -> None:
        topics = [NewTopic(t, num_partitions=PARTITIONS) for t in (self.source, self.sink)]
        for future in self.admin.create_topics(topics).values():
            future.result(timeout=30)
        time.sleep(1)  # a busy broker's metadata catches up
        ensure_topics(
            build_copy(self.pipeline, self.source, self.sink),
            kafka=KafkaSettings(bootstrap_servers=self.bootstrap),
        )
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5})
        for n in range(RECORDS):
            producer.produce(self.source, str(n).encode(), key=f"k{n % 50}".encode())
            if n % 10_000 == 0:
                producer.poll(0)
        producer.flush(60)

    def start(self, name: str, hostname: str) -> tuple[subprocess.Popen[bytes], float]:
        with (self.log_dir / f"{self.pipeline}-{name}.log").open("ab") as out:
            process = subprocess.Popen(
                [
                    STREAMS,
                    "run",
                    "tests.integration.pipelines:copy",
                    "--stage",
                    "copy",
                    "--slot-from-hostname",
                ],
                cwd=ROOT,
                env={**self.env, "HOSTNAME": hostname},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process, time.monotonic()

    def committed(self) -> int:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group})
        try:
            tps = [TopicPartition(self.source, p) for p in range(PARTITIONS)]
            return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
        finally:
            consumer.close()

    @property
    def group(self) -> str:
        return f"{self.pipeline}.copy"

    def offsets(self) -> tuple[list[int], list[int]]:
        wanted = {TopicPartition(self.sink, p): admin_specs.latest() for p in range(PARTITIONS)}
        found = []
        for isolation in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED):
            futures = self.admin.list_offsets(wanted, isolation_level=isolation)
            by_partition = {tp.partition: f.result(timeout=15).offset for tp, f in futures.items()}
            found.append([by_partition[p] for p in range(PARTITIONS)])
        return found[0], found[1]

    def transaction_open(self) -> bool:
        stable, high = self.offsets()
        return stable != high

    def run(self, mode: str) -> dict[str, Any]:
        self.setup()
        for attempt in range(5):
            pod, _ = self.start(f"pod{attempt}", "enrich-0")
            _wait(lambda: self.committed() >= 500, 120)
            _wait(self.transaction_open, 30)
            workers = _children(pod.pid)
            rss = {"worker_rss_mib": _rss_mib(next(iter(workers))), "supervisor_rss_mib": 0.0}
            rss["supervisor_rss_mib"] = _rss_mib(pod.pid)
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            os.killpg(pod.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            pod.wait(timeout=30)
            stable, high = self.offsets()
            stuck = {p: stable[p] for p in range(PARTITIONS) if stable[p] < high[p]}
            if stuck:
                break
        else:
            raise RuntimeError("five kills found no open transaction")
        _, restarted_at = self.start("restart", "enrich-0" if mode == "stable" else "enrich-1")

        def moved() -> bool:
            now = self.offsets()[0]
            return all(now[p] > offset for p, offset in stuck.items())

        _wait(moved, 120)
        moved_at = time.monotonic()
        return {
            "mode": mode,
            "stall_after_kill_s": round(moved_at - killed_at, 2),
            "stall_after_restart_launch_s": round(moved_at - restarted_at, 2),
            **{k: round(v, 1) for k, v in rss.items()},
        }

    def close(self) -> None:
        for process in self.processes:
            for pid in _children(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        topics = [
            self.source,
            self.sink,
            *(
                s.name
                for s in build_copy(self.pipeline, "x", "y").topic_specs()
                if "retry" in s.name
            ),
            f"{self.pipeline}.copy.dlq",
        ]
        for future in self.admin.delete_topics(topics).values():
            with contextlib.suppress(Exception):
                future.result(timeout=30)


def _wait(predicate: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout_s:.0f} s")
        time.sleep(0.2)


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, ppid = text[text.rindex(")") + 2 :].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.add(int(text.split(" ", 1)[0]))
    return found


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.slot_stall")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    args = parser.parse_args()
    log_dir = Path("/tmp") / f"slot-stall-{uuid.uuid4().hex[:6]}"  # noqa: S108 - logs only
    log_dir.mkdir()
    rounds = []
    for _ in range(args.rounds):
        for mode in ("stable", "new-slot"):
            bench_round = Round(args.bootstrap, log_dir)
            try:
                rounds.append(bench_round.run(mode))
            finally:
                bench_round.close()
            print(json.dumps(rounds[-1]))
    summary = {
        mode: {
            "stall_after_kill_s_median": statistics.median(
                r["stall_after_kill_s"] for r in rounds if r["mode"] == mode
            ),
            "stall_after_restart_launch_s_median": statistics.median(
                r["stall_after_restart_launch_s"] for r in rounds if r["mode"] == mode
            ),
        }
        for mode in ("stable", "new-slot")
    }
    result = {
        "bench": "slot_stall",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "setup": {
            "partitions": PARTITIONS,
            "records": RECORDS,
            "transaction_timeout_ms": TRANSACTION_TIMEOUT_MS,
            "batch_max_ms": 4000,
            "static_membership": True,
        },
        "rounds": rounds,
        "summary": summary,
        "rss_mib": {
            "worker_median": statistics.median(r["worker_rss_mib"] for r in rounds),
            "supervisor_median": statistics.median(r["supervisor_rss_mib"] for r in rounds),
        },
        "logs": str(log_dir),
    }
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"slot_stall-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"written {path}")


if __name__ == "__main__":
    main()
