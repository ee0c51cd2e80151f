"""Chaos for the faust adapter: numbered records through a faust agent run as a stage, worker
SIGKILLs, then every record counted in the output and the DLQ.

    python -m tests.chaos.faust_chaos --records 20000 --rate 300 --kills 6
    python -m tests.chaos.faust_chaos --records 20000 --rate 300 --kills 6 --unpatched

The guarantee is what this measures: exactly-once when no record is duplicated or lost, else
at-least-once with the duplicates counted per fault. ``--unpatched`` is the control: faust's
own sends, outside any transaction (faust-streaming/faust#177), which the check must catch.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from streams import headers
from streams.config import KafkaSettings
from streams.kafka.messages import message_headers
from streams.topics import ensure_topics
from tests.chaos.harness import private_stack, write_result
from tests.integration.eos import read_topic

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4


@dataclass
class FaustChaosConfig:
    records: int = 20_000
    rate: float = 300.0
    kills: int = 6
    progress: int = 500
    unpatched: bool = False
    finish_timeout_s: float = 300.0


@dataclass
class FaustChaosReport:
    config: FaustChaosConfig
    outputs: int
    duplicates: int
    lost: int
    dead_lettered: int
    dead_wrong: list[int]
    faults: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0
    output_markers: int = 0

    @property
    def guarantee(self) -> str:
        if self.lost or self.dead_wrong:
            return "VIOLATED: records lost or dead-lettered wrongly"
        if self.duplicates:
            kills = sum(1 for f in self.faults if f["kind"] == "sigkill") or 1
            return (
                f"at-least-once: {self.duplicates} duplicates over {kills} kills "
                f"({self.duplicates / kills:.1f} per kill)"
            )
        return "exactly-once: no duplicate, no loss"

    def summary(self) -> dict[str, Any]:
        return {
            "records": self.config.records,
            "unpatched_control": self.config.unpatched,
            "kills": sum(1 for f in self.faults if f["kind"] == "sigkill"),
            "guarantee": self.guarantee,
            "outputs": self.outputs,
            "duplicates": self.duplicates,
            "lost": self.lost,
            "dead_lettered": self.dead_lettered,
            "dead_lettered_wrongly": self.dead_wrong[:10],
            "output_transaction_markers": self.output_markers,
            "elapsed_s": round(self.elapsed_s, 1),
            "faults_detail": self.faults,
        }


class FaustChaos:
    def __init__(self, config: FaustChaosConfig, *, bootstrap: str, workdir: Path) -> None:
        self.cfg = config
        self.kafka = KafkaSettings(bootstrap_servers=bootstrap)
        self.client = self.kafka.client_config()
        self.workdir = workdir
        self.name = f"faustchaos{uuid.uuid4().hex[:8]}"
        os.environ["STREAMS_BOOTSTRAP_SERVERS"] = bootstrap  # the pipeline module reads it
        from tests.chaos.faust_pipeline import build  # noqa: PLC0415 - after the env is set

        self.pipeline = build(self.name)
        self.spec = self.pipeline.component("copy")
        self.log_path = workdir / f"{self.name}.log"
        self.worker: subprocess.Popen[bytes] | None = None
        self.faults: list[dict[str, Any]] = []
        self.fed = 0
        self.began = time.monotonic()

    def _start(self) -> None:
        env = {
            **os.environ,
            "CHAOS_NAME": self.name,
            "STREAMS_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            "STREAMS_FAUST_UNPATCHED": "1" if self.cfg.unpatched else "0",
        }
        with self.log_path.open("ab") as log:
            self.worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "streams.runtime.worker",
                    "tests.chaos.faust_pipeline:pipeline",
                    "--stage",
                    "copy",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _offsets(self) -> tuple[int, int] | None:
        consumer = Consumer(
            {**self.client, "group.id": self.spec.group_id, "isolation.level": "read_committed"}
        )
        done = left = 0
        try:
            parts = [TopicPartition(self.spec.inputs[0], p) for p in range(PARTITIONS)]
            for tp in consumer.committed(parts, timeout=10):
                stable = consumer.get_watermark_offsets(tp, timeout=10)[1]
                done += max(tp.offset, 0)
                left += max(0, stable - max(tp.offset, 0))
        except KafkaException:
            return None
        finally:
            consumer.close()
        return done, left

    def _feed(self) -> None:
        producer = Producer({**self.client, "enable.idempotence": True, "linger.ms": 10})
        began = time.monotonic()
        for n in range(self.cfg.records):
            ahead = n / self.cfg.rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)
            while True:
                try:
                    producer.produce(self.spec.inputs[0], str(n).encode(), key=f"k{n % 9}".encode())
                    break
                except BufferError:
                    producer.poll(0.1)
            self.fed = n + 1
        producer.flush(300)

    def _wait(self, done: Any, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.worker is not None
            if self.worker.poll() is not None:
                self.faults.append({"kind": "crash-restart", "at_s": self._now()})
                self._start()
            found = self._offsets()
            if found is not None and done(found):
                return True
            time.sleep(0.3)
        return False

    def _now(self) -> float:
        return round(time.monotonic() - self.began, 1)

    def run(self) -> FaustChaosReport:
        ensure_topics(self.pipeline, kafka=self.kafka)
        self.began = time.monotonic()
        self._start()
        feeder = threading.Thread(target=self._feed, daemon=True)
        feeder.start()
        try:
            for _ in range(self.cfg.kills):
                start = (self._offsets() or (0, 0))[0]
                if not self._wait(lambda f, s=start: f[0] >= s + self.cfg.progress, 120):
                    break
                assert self.worker is not None
                self.worker.send_signal(signal.SIGKILL)
                self.worker.wait(timeout=30)
                self.faults.append({"kind": "sigkill", "at_s": self._now()})
                self._start()
            feeder.join()
            quiet = 0
            deadline = time.monotonic() + self.cfg.finish_timeout_s
            while quiet < 3 and time.monotonic() < deadline:
                self._wait(lambda f: f[1] == 0 and self.fed >= self.cfg.records, 30)
                found = self._offsets()
                quiet = quiet + 1 if found is not None and found[1] == 0 else 0
                time.sleep(1)
        finally:
            if self.worker is not None and self.worker.poll() is None:
                self.worker.send_signal(signal.SIGTERM)
                try:
                    self.worker.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self.worker.kill()
        return self._report()

    def _report(self) -> FaustChaosReport:
        outputs = [int(m.value()) for m in read_topic(self.client, f"{self.name}.out", PARTITIONS)]
        dead = []
        for message in read_topic(self.client, self.spec.dlq_topic or "", PARTITIONS):
            reason = headers.get(message_headers(message), headers.ERROR_REASON) or b"?"
            dead.append((int(message.value()), reason.decode()))
        from tests.chaos.faust_pipeline import is_poison  # noqa: PLC0415

        counts = Counter(outputs)
        poison = {n for n in range(self.cfg.records) if is_poison(n)}
        dead_numbers = {n for n, _ in dead}
        lost = set(range(self.cfg.records)) - set(counts) - dead_numbers
        wrong = sorted(
            {n for n, reason in dead if n not in poison or reason != "dead-letter"}
            | (poison - dead_numbers)
        )
        every = read_topic(
            self.client, f"{self.name}.out", PARTITIONS, isolation="read_uncommitted"
        )
        high = 0
        consumer = Consumer({**self.client, "group.id": "faust-chaos-hw"})
        try:
            for p in range(PARTITIONS):
                high += consumer.get_watermark_offsets(
                    TopicPartition(f"{self.name}.out", p), timeout=10
                )[1]
        finally:
            consumer.close()
        return FaustChaosReport(
            config=self.cfg,
            outputs=len(outputs),
            duplicates=sum(c - 1 for c in counts.values() if c > 1),
            lost=len(lost),
            dead_lettered=len(dead),
            dead_wrong=wrong,
            faults=self.faults,
            elapsed_s=time.monotonic() - self.began,
            output_markers=high - len(every),
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--unpatched", action="store_true", help="the control: faust as shipped")
    parser.add_argument("--bootstrap", help="a running broker (default: a private one)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="faustchaos-"))
    stack = None
    if args.bootstrap is None:
        stack = private_stack(workdir)
        stack.up(with_registry=False)
    try:
        report = FaustChaos(
            FaustChaosConfig(
                records=args.records, rate=args.rate, kills=args.kills, unpatched=args.unpatched
            ),
            bootstrap=args.bootstrap or (stack.settings.bootstrap_servers if stack else ""),
            workdir=workdir,
        ).run()
    finally:
        if stack is not None:
            stack.down()
    summary = report.summary()
    print(json.dumps(summary, indent=2))  # noqa: T201
    write_result("faust-unpatched" if args.unpatched else "faust", summary)
    return 0 if not report.lost and not report.dead_wrong else 1


if __name__ == "__main__":
    sys.exit(main())
