"""Chaos for an aggregate stage: numbered records in, worker SIGKILLs (and broker restarts),
then every emitted window checked against an offline recomputation (``aggregate_check``).

    python -m tests.chaos.aggregate --records 20000 --rate 400 --kills 6
    python -m tests.chaos.aggregate --records 20000 --rate 400 --kills 6 --broker-restarts 1

One worker (slot 0) with static membership, as in ``tests.chaos.harness``: each kill lands
after the stage committed ``progress`` records since its start, and the restarted worker
restores its whole state from the changelog before it folds a record (a SIGKILL leaves no
checkpoint).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from streams import headers
from streams.config import KafkaSettings
from streams.kafka.messages import message_headers
from streams.localstack.stack import LocalStack
from streams.topics import ensure_topics
from tests.chaos.aggregate_check import Input, Violation, check, expected
from tests.chaos.aggregate_pipeline import (
    KEYS,
    PARTITIONS,
    STAGE,
    WINDOW,
    build,
    event_ms,
    is_late,
    is_poison,
    parse_output,
    topics,
)
from tests.chaos.harness import private_stack, write_result
from tests.integration.eos import read_topic

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class AggregateChaosConfig:
    records: int = 20_000
    rate: float = 400.0
    kills: int = 6
    broker_restarts: int = 0
    progress: int = 500
    store: str = "rocksdb"
    finish_timeout_s: float = 300.0


@dataclass
class AggregateChaosReport:
    config: AggregateChaosConfig
    violations: list[Violation]
    faults: list[dict[str, Any]]
    elapsed_s: float
    windows_emitted: int
    windows_open_at_end: int
    late_in_dlq: int
    restores: list[float] = field(default_factory=list)
    log: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "records": self.config.records,
            "store": self.config.store,
            "faults": {
                kind: sum(1 for f in self.faults if f["kind"] == kind)
                for kind in ("sigkill", "broker-clean", "broker-hard")
            },
            "invariants": "all hold" if not self.violations else "VIOLATED",
            "violations": [str(v) for v in self.violations],
            "elapsed_s": round(self.elapsed_s, 1),
            "windows_emitted": self.windows_emitted,
            "windows_open_at_end": self.windows_open_at_end,
            "late_in_dlq": self.late_in_dlq,
            "restores": len(self.restores),
            "restore_s_max": round(max(self.restores), 2) if self.restores else None,
            "faults_detail": self.faults,
        }


class AggregateChaos:
    """One run: a worker of the aggregate, a feeder, the faults, then the check."""

    def __init__(
        self,
        config: AggregateChaosConfig,
        *,
        bootstrap: str,
        workdir: Path,
        stack: LocalStack | None = None,
    ) -> None:
        self.cfg = config
        self.kafka = KafkaSettings(bootstrap_servers=bootstrap)
        self.client = self.kafka.client_config()
        self.workdir = workdir
        self.stack = stack
        self.name = f"aggchaos{uuid.uuid4().hex[:8]}"
        self.pipeline = build(self.name, config.store)
        spec = self.pipeline.component(STAGE)
        assert spec.kind == "aggregate"
        self.spec = spec
        self.log_path = workdir / f"{self.name}.log"
        self.worker: subprocess.Popen[bytes] | None = None
        self.faults: list[dict[str, Any]] = []
        self.fed = 0
        self.began = time.monotonic()

    def _start(self) -> None:
        env = {
            **os.environ,
            "CHAOS_NAME": self.name,
            "CHAOS_STORE": self.cfg.store,
            "STREAMS_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            "STREAMS_STATE_DIR": str(self.workdir / "state"),
            "STREAMS_STAGE_STATIC_MEMBERSHIP": "1",
            "STREAMS_STAGE_SESSION_TIMEOUT_MS": "15000",
            "STREAMS_STAGE_BATCH_MAX_MS": "500",
            "STREAMS_STAGE_STATS_INTERVAL_S": "30",
            "STREAMS_STAGE_WATCHDOG_S": "60",
        }
        with self.log_path.open("ab") as log:
            self.worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "streams.runtime.worker",
                    "tests.chaos.aggregate_pipeline:pipeline",
                    "--stage",
                    STAGE,
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _offsets(self) -> tuple[int, int] | None:
        """(records committed by the stage, records it has still to commit) on all it reads."""
        consumer = Consumer(
            {**self.client, "group.id": self.spec.group_id, "isolation.level": "read_committed"}
        )
        done = left = 0
        try:
            parts = [TopicPartition(t, p) for t in self.spec.lag_topics for p in range(PARTITIONS)]
            for tp in consumer.committed(parts, timeout=10):
                stable = consumer.get_watermark_offsets(tp, timeout=10)[1]
                done += max(tp.offset, 0) if tp.topic == self.spec.inputs[0] else 0
                left += max(0, stable - max(tp.offset, 0))
        except KafkaException:
            return None
        finally:
            consumer.close()
        return done, left

    def _feed(self) -> None:
        producer = Producer({**self.client, "enable.idempotence": True, "linger.ms": 10})
        source = topics(self.name)[0]
        began = time.monotonic()
        for n in range(self.cfg.records):
            ahead = n / self.cfg.rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)
            while True:
                try:
                    producer.produce(source, str(n).encode(), key=f"k{n % KEYS}".encode())
                    break
                except BufferError:
                    producer.poll(0.1)
            self.fed = n + 1
        producer.flush(300)

    def _revive(self) -> None:
        assert self.worker is not None
        code = self.worker.poll()
        if code is not None:
            assert code == 1, f"the worker exited {code}; see {self.log_path}"
            self.faults.append({"kind": "crash-restart", "at_s": self._now()})
            self._start()

    def _now(self) -> float:
        return round(time.monotonic() - self.began, 1)

    def _wait_progress(self, since: int) -> bool:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            self._revive()
            found = self._offsets()
            if found is not None and found[0] >= since + self.cfg.progress:
                return True
            if self.fed >= self.cfg.records and found is not None and found[1] == 0:
                return False
            time.sleep(0.3)
        return False

    def _kill(self) -> None:
        assert self.worker is not None
        before = self._offsets()
        self.worker.send_signal(signal.SIGKILL)
        self.worker.wait(timeout=30)
        fault = {"kind": "sigkill", "at_s": self._now()}
        self.faults.append(fault)
        at = time.monotonic()
        self._start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            self._revive()
            found = self._offsets()
            if found is not None and before is not None and found[0] > before[0]:
                fault["recovered_after_s"] = round(time.monotonic() - at, 1)
                return
            if found is not None and self.fed >= self.cfg.records and found[1] == 0:
                return
            time.sleep(0.2)
        raise AssertionError("the aggregate did not recover within 120 s after a kill")

    def _restart_broker(self, kind: str) -> None:
        assert self.stack is not None, "broker restarts need a stack the harness controls"
        process = self.stack.kafka.process
        if kind == "broker-clean":
            process.stop(timeout_s=60)
        else:
            pid = process.running_pid()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            while process.running_pid() is not None:
                time.sleep(0.1)
            process.clear_stale()
            time.sleep(3)
        self.stack.up(with_registry=False)
        self.faults.append({"kind": kind, "at_s": self._now()})

    def run(self) -> AggregateChaosReport:
        ensure_topics(self.pipeline, kafka=self.kafka)
        self.began = time.monotonic()
        self._start()
        feeder = threading.Thread(target=self._feed, daemon=True)
        feeder.start()
        brokers = [
            "broker-clean" if i % 2 == 0 else "broker-hard" for i in range(self.cfg.broker_restarts)
        ]
        plan = ["sigkill"] * self.cfg.kills
        for i, broker in enumerate(brokers):
            plan.insert(
                min(len(plan), (i + 1) * max(1, len(plan) // (len(brokers) + 1)) + i), broker
            )
        try:
            for kind in plan:
                found = self._offsets()
                if not self._wait_progress(found[0] if found else 0):
                    break
                if kind == "sigkill":
                    self._kill()
                else:
                    self._restart_broker(kind)
            feeder.join()
            self._wait_finished()
        finally:
            if self.worker is not None and self.worker.poll() is None:
                self.worker.send_signal(signal.SIGTERM)
                try:
                    self.worker.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self.worker.kill()
        return self._report()

    def _wait_finished(self) -> None:
        deadline = time.monotonic() + self.cfg.finish_timeout_s
        quiet = 0
        while time.monotonic() < deadline:
            self._revive()
            found = self._offsets()
            quiet = quiet + 1 if found is not None and found[1] == 0 else 0
            if quiet >= 3:
                return
            time.sleep(1.0)
        raise AssertionError(
            f"the aggregate did not drain within {self.cfg.finish_timeout_s:.0f} s\n"
            + self.log_path.read_text(errors="replace")[-3000:]
        )

    def _report(self) -> AggregateChaosReport:
        source, sink = topics(self.name)
        read = read_topic(self.client, source, PARTITIONS)
        inputs = sorted(
            (Input(int(m.value()), (m.key() or b"").decode(), m.partition()) for m in read),
            key=lambda i: (i.partition, i.n),
        )
        want = expected(inputs, window=WINDOW, event_ms=event_ms, is_poison=is_poison)
        emitted = []
        for message in read_topic(self.client, sink, PARTITIONS):
            out = parse_output(message.value())
            emitted.append((str(out["key"]), int(out["start_ms"]), list(out["value"])))
        dead = []
        for message in read_topic(self.client, self.spec.dlq_topic, PARTITIONS):
            reason = headers.get(message_headers(message), headers.ERROR_REASON) or b"?"
            dead.append((int(message.value()), reason.decode()))
        planned = {n for n in range(self.cfg.records) if is_late(n)}
        restores = [
            float(found)
            for found in re.findall(r'"?seconds"?[=:] ?([0-9.]+)', self._restore_lines())
        ]
        return AggregateChaosReport(
            config=self.cfg,
            violations=check(want, emitted, dead, planned),
            faults=self.faults,
            elapsed_s=time.monotonic() - self.began,
            windows_emitted=len(emitted),
            windows_open_at_end=len(want.open),
            late_in_dlq=sum(1 for _, reason in dead if reason == "late"),
            restores=restores,
            log=str(self.log_path),
        )

    def _restore_lines(self) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(line for line in text.splitlines() if "state restored" in line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=400)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--broker-restarts", type=int, default=0)
    parser.add_argument("--store", default="rocksdb", choices=["memory", "rocksdb", "sqlite"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="aggchaos-"))
    stack = private_stack(workdir)
    stack.up(with_registry=False)
    try:
        report = AggregateChaos(
            AggregateChaosConfig(
                records=args.records,
                rate=args.rate,
                kills=args.kills,
                broker_restarts=args.broker_restarts,
                store=args.store,
                finish_timeout_s=600,
            ),
            bootstrap=stack.settings.bootstrap_servers,
            workdir=workdir,
            stack=stack,
        ).run()
    finally:
        stack.down()
    summary = report.summary()
    text = json.dumps(summary, indent=2)
    print(text)  # noqa: T201
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    write_result("aggregate", summary)
    return 0 if not report.violations else 1


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["AggregateChaos", "AggregateChaosConfig", "AggregateChaosReport", "asdict"]
