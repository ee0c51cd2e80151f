"""Run the chaos pipeline under faults and record a history for the checker.

Modelled on Apache Kafka's transactions system test and Kafka Streams' EOS test: numbered
records are fed at a steady rate while stage workers are SIGKILLed and SIGTERMed (each after
its stage made progress since its last start) and, in separate runs, the broker itself is
restarted. A read_committed reader watches the output the whole time. At the end a fresh
reader, the DLQs, the retry topics and the database give the history.

    python -m tests.chaos.harness --records 100000 --rate 500 --kills 18 --sigterms 4
    python -m tests.chaos.harness --records 20000 --rate 300 --broker-restarts 2 --kills 0
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from streams import headers
from streams.config import KafkaSettings
from streams.kafka.messages import message_headers
from streams.localstack.stack import LocalStack
from streams.topics import ensure_topics
from tests.chaos.checker import Dead, History, Observed, Violation, check
from tests.chaos.pipeline import (
    KEYS,
    NUMBER_SCHEMA,
    PARTITIONS,
    SCHEMAS,
    STAGES,
    build,
    is_poison,
    topics,
)
from tests.integration.eos import open_transaction, read_topic

ROOT = Path(__file__).resolve().parents[2]
_COMPONENTS = (*STAGES, "store")


@dataclass
class ChaosConfig:
    records: int = 6000
    rate: float = 200.0  # records fed per second
    kills: int = 6  # SIGKILLs of stage workers
    sigterms: int = 2  # SIGTERM + restart of stage workers
    broker_restarts: int = 0  # alternately clean (SIGTERM) and hard (SIGKILL)
    progress: int = 150  # records a stage commits after a worker's start before it is hit
    delay_ms: float = 0.0
    finish_timeout_s: float = 300.0
    key_ordered: bool = False  # stages with key-ordered retries: every record's order checked
    check_all_order: bool = False  # check every record's order anyway (the control run)


@dataclass
class Fault:
    kind: str  # sigkill | sigterm | broker-clean | broker-hard
    target: str
    at_s: float
    recovered_after_s: float | None = None
    # broker restarts: seconds from the broker answering again to each component's next commit
    down_s: float | None = None
    per_component_s: dict[str, float | None] = field(default_factory=dict)


@dataclass
class ChaosReport:
    config: ChaosConfig
    violations: list[Violation]
    faults: list[Fault]
    elapsed_s: float
    outputs: int
    dead: int
    retried: int
    sink_rows: int
    aborted_seen_uncommitted: int = 0
    read_concurrently: int = 0
    read_during_faults: int | None = None
    log: str = ""

    @property
    def crash_restarts(self) -> int:
        """Workers that ended by themselves (exit 1) and were restarted: not caused by a fault."""
        return sum(1 for f in self.faults if f.kind == "crash-restart")

    def summary(self) -> dict[str, Any]:
        recoveries = [f.recovered_after_s for f in self.faults if f.recovered_after_s is not None]
        return {
            "records": self.config.records,
            "faults": {
                k: sum(1 for f in self.faults if f.kind == k)
                for k in ("sigkill", "sigterm", "broker-clean", "broker-hard", "crash-restart")
            },
            "invariants": "all hold" if not self.violations else "VIOLATED",
            "violations": [str(v) for v in self.violations],
            "elapsed_s": round(self.elapsed_s, 1),
            "outputs": self.outputs,
            "dead_lettered": self.dead,
            "retry_records": self.retried,
            "sink_rows": self.sink_rows,
            "aborted_records_in_log": self.aborted_seen_uncommitted,
            "read_concurrently": self.read_concurrently,
            "read_while_faults_ran": self.read_during_faults,
            "recovery_s_max": round(max(recoveries), 1) if recoveries else None,
            "recovery_s_median": round(sorted(recoveries)[len(recoveries) // 2], 1)
            if recoveries
            else None,
            "broker_recovery_s": [
                f.recovered_after_s for f in self.faults if f.kind.startswith("broker")
            ],
            "faults_detail": [asdict(f) for f in self.faults],
        }


@dataclass
class _Worker:
    component: str
    process: subprocess.Popen[bytes]
    started_at: float
    progress_at_start: int


@dataclass
class _Verifier:
    """A read_committed reader of the output, running while the faults happen."""

    config: dict[str, Any]
    topic: str
    seen: list[Observed] = field(default_factory=list)
    seen_at: list[float] = field(default_factory=list)  # monotonic time of each, in order
    stop: threading.Event = field(default_factory=threading.Event)

    def read_between(self, start: float, end: float) -> int:
        return sum(1 for at in self.seen_at if start <= at <= end)

    def run(self) -> None:
        consumer = Consumer(
            {
                **self.config,
                "group.id": f"chaos-verify-{uuid.uuid4().hex}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        consumer.assign([TopicPartition(self.topic, p, 0) for p in range(PARTITIONS)])
        while not self.stop.is_set():
            for message in consumer.consume(500, timeout=0.5):
                if message.error() is None:
                    self.seen.append(_observed(message))
                    self.seen_at.append(time.monotonic())
        consumer.close()


def _observed(message: Any) -> Observed:
    return Observed(
        int(message.value()),
        (message.key() or b"").decode(),
        message.partition(),
        message.offset(),
    )


class Chaos:
    def __init__(
        self,
        config: ChaosConfig,
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
        self.name = f"chaos{uuid.uuid4().hex[:8]}"
        self.db_path = workdir / f"{self.name}.db"
        self.pipeline = build(self.name, f"sqlite:///{self.db_path}")
        self.log_path = workdir / f"{self.name}.log"
        self.workers: dict[str, _Worker] = {}
        self.faults: list[Fault] = []
        self.began = time.monotonic()
        self.fed = 0
        self.expected_foreign = 0  # DLQ records that are no numbered input (infra runs)
        self.alive_at_end: dict[str, bool] = {}

    # -- processes ---------------------------------------------------------------------------

    def _env(self, component: str) -> dict[str, str]:
        env = {
            **os.environ,
            "CHAOS_NAME": self.name,
            "CHAOS_DB": f"sqlite:///{self.db_path}",
            "CHAOS_DELAY_MS": str(self.cfg.delay_ms),
            "CHAOS_KEY_ORDERED": "1" if self.cfg.key_ordered else "0",
            "STREAMS_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            # static membership: a restarted worker gets its partitions back at once
            "STREAMS_STAGE_STATIC_MEMBERSHIP": "1",
            "STREAMS_STAGE_SESSION_TIMEOUT_MS": "15000",
            # longer transactions, so that kills land inside an open one
            "STREAMS_STAGE_BATCH_MAX_MS": "500",
            "STREAMS_STAGE_STATS_INTERVAL_S": "30",
            # a worker stuck in a client call (seen after broker restarts) exits and is revived
            "STREAMS_STAGE_WATCHDOG_S": "60",
        }
        if component == "store":
            env["STREAMS_KAFKA_EXTRA"] = json.dumps({"group.instance.id": f"{self.name}.store.0"})
        return env

    def _start(self, component: str) -> None:
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "streams.runtime.worker",
                    "tests.chaos.pipeline:pipeline",
                    "--stage",
                    component,
                    "--slot",
                    "0",
                ],
                cwd=ROOT,
                env=self._env(component),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.workers[component] = _Worker(
            component, process, time.monotonic(), self._progress(component)
        )

    def _progress(self, component: str) -> int:
        """Records the component's group has committed on its main input."""
        index = _COMPONENTS.index(component)
        topic = topics(self.name)[index]
        group = f"{self.name}.{component}"
        consumer = Consumer({**self.client, "group.id": group})
        try:
            offsets = consumer.committed(
                [TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10
            )
        except KafkaException:
            return -1
        finally:
            consumer.close()
        return sum(max(tp.offset, 0) for tp in offsets)

    def _lag(self, component: str) -> int | None:
        lags = self._lags(component)
        return None if lags is None else sum(lags.values())

    def _lags(self, component: str) -> dict[str, int] | None:
        """The component's lag per partition (``topic/p``) that has any, against the LSO."""
        stage_topics = [topics(self.name)[_COMPONENTS.index(component)]]
        if component != "store":
            stage_topics += self.pipeline.get(component).retry_topics
        consumer = Consumer(
            {
                **self.client,
                "group.id": f"{self.name}.{component}",
                "isolation.level": "read_committed",
            }
        )
        found: dict[str, int] = {}
        try:
            parts = [TopicPartition(t, p) for t in stage_topics for p in range(PARTITIONS)]
            for tp in consumer.committed(parts, timeout=10):
                _low, stable = consumer.get_watermark_offsets(tp, timeout=10)
                lag = max(0, stable - max(tp.offset, 0))
                if lag:
                    found[f"{tp.topic}/{tp.partition} committed {tp.offset} stable {stable}"] = lag
        except KafkaException:
            return None
        finally:
            consumer.close()
        return found

    # -- feeding -----------------------------------------------------------------------------

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

    # -- faults ------------------------------------------------------------------------------

    def _schedule(self) -> list[str]:
        kinds = ["sigkill"] * self.cfg.kills + ["sigterm"] * self.cfg.sigterms
        # spread the SIGTERMs among the kills
        if self.cfg.sigterms:
            step = max(1, len(kinds) // (self.cfg.sigterms + 1))
            kinds = ["sigkill"] * self.cfg.kills
            for i in range(self.cfg.sigterms):
                kinds.insert(min(len(kinds), (i + 1) * step + i), "sigterm")
        brokers = [
            "broker-clean" if i % 2 == 0 else "broker-hard" for i in range(self.cfg.broker_restarts)
        ]
        return brokers + kinds if not kinds else _interleave(kinds, brokers)

    def _revive(self) -> None:
        """Act as the supervisor: restart a worker that ended by itself.

        Exit 1 is a crash. SIGABRT (-6) is librdkafka aborting the process: an admin request
        (describe consumer groups) that spans a broker restart can fail its assertion
        ``eonce->refcnt > 0`` (librdkafka#4605, open); the supervisor restarts such a worker
        like any crash. Both are counted (``crash-restart`` faults, with the code in the
        target), so that a run which must have none can say so; any other end stops the run.
        """
        for component, worker in list(self.workers.items()):
            code = worker.process.poll()
            if code is not None:
                assert code in {1, -signal.SIGABRT}, (
                    f"worker {component} ended with {code}, see {self.log_path}"
                )
                target = component if code == 1 else f"{component} (SIGABRT)"
                self.faults.append(
                    Fault("crash-restart", target, round(time.monotonic() - self.began, 1))
                )
                self._start(component)

    def _wait_progress(self, component: str, deadline: float) -> bool:
        worker = self.workers[component]
        while time.monotonic() < deadline:
            self._revive()
            worker = self.workers[component]
            if self._progress(component) >= worker.progress_at_start + self.cfg.progress:
                return True
            if worker.process.poll() is not None:
                raise AssertionError(
                    f"worker {component} exited with {worker.process.returncode}\n"
                    + self.log_path.read_text(errors="replace")[-3000:]
                )
            time.sleep(0.3)
        return False

    def _recovered(self, component: str, since: float, before: int) -> float | None:
        """Seconds from the fault until the component commits again (None: nothing to do)."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            self._revive()
            if self._progress(component) > before:
                return time.monotonic() - since
            if self.fed >= self.cfg.records and self._lag(component) == 0:
                return None
            time.sleep(0.2)
        raise AssertionError(f"{component} did not recover within 120 s after a fault")

    def _wait_open_transaction(self, component: str) -> None:
        """Until the stage has a transaction open (its output's HW above its LSO), for 10 s.

        So that a kill lands inside an open transaction. The sink writes no topic: it is hit
        at once (its batches are database transactions).
        """
        if component == "store":
            return
        output = topics(self.name)[_COMPONENTS.index(component) + 1]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if open_transaction(self.client, output, PARTITIONS):
                return
            time.sleep(0.05)

    def _hit_worker(self, kind: str, component: str, *, wait: bool = True) -> Fault:
        """SIGKILL or SIGTERM the component's worker and restart it; with ``wait``, until it
        commits again (its recovery time)."""
        worker = self.workers[component]
        at = time.monotonic()
        before = self._progress(component)
        if kind == "sigkill":
            worker.process.send_signal(signal.SIGKILL)
            worker.process.wait(timeout=30)
        else:
            worker.process.send_signal(signal.SIGTERM)
            code = worker.process.wait(timeout=60)
            assert code == 0, f"{component} exited {code} on SIGTERM"
        self._start(component)
        fault = Fault(kind, component, round(at - self.began, 1))
        self.faults.append(fault)
        if wait:
            fault.recovered_after_s = self._recovered(component, at, before)
        return fault

    def _restart_broker(self, kind: str, *, away_s: float = 0.0) -> None:
        """Restart the broker, then wait until every component commits again.

        ``away_s``: the broker stays down at least this long (from the stop to the start).

        Recovery is counted per component from the moment the broker answers again (``up``
        returned) to the component's next commit on its main input; a component with nothing
        left to do (all fed, no lag) counts as None. ``recovered_after_s`` is the slowest.
        """
        assert self.stack is not None, "broker restarts need a stack the harness controls"
        at = time.monotonic()
        before = {c: self._progress(c) for c in _COMPONENTS}
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
            time.sleep(3)  # the clients notice: connections refused, then reconnect attempts
        time.sleep(max(0.0, at + away_s - time.monotonic()))
        self.stack.up(with_registry=False)
        answered = time.monotonic()
        fault = Fault(kind, "broker", round(at - self.began, 1), down_s=round(answered - at, 1))
        self.faults.append(fault)
        waiting = set(_COMPONENTS)
        deadline = answered + 180
        while waiting and time.monotonic() < deadline:
            self._revive()
            for component in sorted(waiting):
                if self._progress(component) > before[component]:
                    fault.per_component_s[component] = round(time.monotonic() - answered, 1)
                    waiting.discard(component)
                elif self.fed >= self.cfg.records and self._lag(component) == 0:
                    fault.per_component_s[component] = None
                    waiting.discard(component)
            time.sleep(0.3)
        if waiting:
            raise AssertionError(
                f"{sorted(waiting)} did not commit within 180 s of the broker answering again"
            )
        times = [t for t in fault.per_component_s.values() if t is not None]
        fault.recovered_after_s = max(times) if times else None

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> ChaosReport:
        ensure_topics(self.pipeline, kafka=self.kafka)
        self.began = time.monotonic()
        for component in _COMPONENTS:
            self._start(component)
        verifier = _Verifier(self.client, topics(self.name)[-1])
        watcher = threading.Thread(target=verifier.run, daemon=True)
        watcher.start()
        feeder = threading.Thread(target=self._feed, daemon=True)
        feeder.start()
        try:
            self._faults()
            feeder.join()
            self._wait_finished()
            self.alive_at_end = {c: w.process.poll() is None for c, w in self.workers.items()}
        finally:
            for worker in self.workers.values():
                if worker.process.poll() is None:
                    worker.process.send_signal(signal.SIGTERM)
            for worker in self.workers.values():
                try:
                    worker.process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    worker.process.kill()
                    worker.process.wait()
            verifier.stop.set()
            watcher.join(timeout=30)
        return self._report(verifier)

    def _faults(self) -> None:
        """Hit the workers (and the broker) on the schedule of the config, as they progress."""
        for index, kind in enumerate(self._schedule()):
            if kind.startswith("broker"):
                time.sleep(3)
                self._restart_broker(kind)
                continue
            component = STAGES[index % len(STAGES)] if index % 4 != 3 else "store"
            if not self._wait_progress(component, time.monotonic() + 120):
                break  # the input is used up: no more progress to wait for
            self._wait_open_transaction(component)
            self._hit_worker(kind, component)

    def _wait_finished(self) -> None:
        deadline = time.monotonic() + self.cfg.finish_timeout_s
        quiet = 0
        while time.monotonic() < deadline:
            self._revive()
            lags = [self._lag(c) for c in _COMPONENTS]
            quiet = quiet + 1 if all(lag == 0 for lag in lags) else 0
            if quiet >= 3:
                return
            time.sleep(1.5)
        for worker in self.workers.values():  # their stacks, into the log, for the report
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGUSR1)
        time.sleep(1)
        raise AssertionError(
            f"the pipeline did not drain within {self.cfg.finish_timeout_s:.0f} s; lag left: "
            f"{ {c: self._lags(c) for c in _COMPONENTS} }\n"
            + self.log_path.read_text(errors="replace")[-3000:]
        )

    def _read(self, topic: str, isolation: str = "read_committed") -> list[Any]:
        return read_topic(self.client, topic, PARTITIONS, isolation=isolation)

    def _offsets(self) -> dict[tuple[str, int], tuple[int, int]]:
        transactional = topics(self.name)[1:]
        for stage in STAGES:
            spec = self.pipeline.get(stage)
            transactional += [*spec.retry_topics, spec.dlq_topic]
        result = {}
        committed = Consumer(
            {**self.client, "group.id": "lso", "isolation.level": "read_committed"}
        )
        uncommitted = Consumer(
            {**self.client, "group.id": "hw", "isolation.level": "read_uncommitted"}
        )
        try:
            for topic in transactional:
                for p in range(PARTITIONS):
                    tp = TopicPartition(topic, p)
                    lso = committed.get_watermark_offsets(tp, timeout=10)[1]
                    hw = uncommitted.get_watermark_offsets(tp, timeout=10)[1]
                    result[(topic, p)] = (lso, hw)
        finally:
            committed.close()
            uncommitted.close()
        return result

    def _report(self, verifier: _Verifier) -> ChaosReport:
        outputs = [_observed(m) for m in self._read(topics(self.name)[-1])]
        dead: list[Dead] = []
        foreign: list[tuple[str, str]] = []
        retried: set[int] = set()
        retry_records = 0
        for stage in STAGES:
            spec = self.pipeline.get(stage)
            for found in (_dead(m, stage) for m in self._read(spec.dlq_topic)):
                (dead if isinstance(found, Dead) else foreign).append(found)  # type: ignore[arg-type]
            for topic in spec.retry_topics:
                records = self._read(topic)
                retry_records += len(records)
                # stage b's retry records are Avro in the runs with a registry
                numbers = (_number(m.value() or b"") for m in records)
                retried |= {n for n in numbers if n is not None}
        with contextlib.closing(sqlite3.connect(self.db_path)) as db:
            rows = [int(r[0]) for r in db.execute("SELECT n FROM chaos_rows")]
        faulted = [f for f in self.faults if f.kind != "crash-restart"]
        during = None
        if faulted:
            first = self.began + faulted[0].at_s
            last = self.began + faulted[-1].at_s + (faulted[-1].recovered_after_s or 0.0)
            during = verifier.read_between(first, last)
        history = History(
            inputs={n: f"k{n % KEYS}" for n in range(self.cfg.records)},
            outputs=outputs,
            dead=dead,
            expected_dead=expected_dead(self.cfg.records),
            sink_rows=rows,
            concurrent=verifier.seen,
            concurrent_during_faults=during,
            foreign_dead=foreign,
            expected_foreign=self.expected_foreign,
            # key-ordered stages promise the order of every record, retried or not
            retried=set() if self.cfg.key_ordered or self.cfg.check_all_order else retried,
            offsets=self._offsets(),
        )
        # records written by transactions that were aborted (kills mid-transaction): in the log,
        # never seen by read_committed readers
        aborted = sum(
            len(self._read(topic, "read_uncommitted")) - len(self._read(topic))
            for topic in topics(self.name)[1:]
        )
        return ChaosReport(
            config=self.cfg,
            violations=check(history),
            faults=self.faults,
            elapsed_s=time.monotonic() - self.began,
            outputs=len(outputs),
            dead=len(dead),
            retried=retry_records,
            sink_rows=len(rows),
            aborted_seen_uncommitted=aborted,
            read_concurrently=len(verifier.seen),
            read_during_faults=during,
            log=str(self.log_path),
        )


def _dead(message: Any, stage: str) -> Dead | tuple[str, str]:
    """A DLQ record as the checker sees it: a numbered input, or (stage, reason) if it is none.

    Stage b's input is Avro in the runs with a registry: its number is read from the record.
    """
    reason = (headers.get(message_headers(message), headers.ERROR_REASON) or b"?").decode(
        errors="replace"
    )
    value = message.value() or b""
    n = _number(value)
    return (stage, reason) if n is None else Dead(n, stage, reason)


_NUMBER = fastavro.parse_schema(json.loads((SCHEMAS / NUMBER_SCHEMA).read_text()))


def _number(value: bytes) -> int | None:
    if value.isdigit():
        return int(value)
    if len(value) > 5 and value[0] == 0:
        with contextlib.suppress(Exception):
            decoded: Any = fastavro.schemaless_reader(io.BytesIO(value[5:]), _NUMBER)
            return int(decoded["n"])
    return None


def expected_dead(records: int) -> dict[int, tuple[str, str]]:
    """What the DLQs must hold after a run: the poison records, at stage b, dead-lettered.

    No other record may be there: planned transient failures (at most 2) stay below the
    policy's 4 attempts, so none runs out of retries.
    """
    return {n: ("b", "dead-letter") for n in range(records) if is_poison(n)}


def _interleave(kinds: list[str], brokers: list[str]) -> list[str]:
    if not brokers:
        return kinds
    step = max(1, len(kinds) // (len(brokers) + 1))
    out = list(kinds)
    for i, broker in enumerate(brokers):
        out.insert(min(len(out), (i + 1) * step + i), broker)
    return out


RESULTS = Path(__file__).resolve().parent / "results"


def write_result(label: str, summary: dict[str, Any]) -> Path:
    """Keep a run's summary as ``tests/chaos/results/<label>-<UTC time>.json``.

    Every run writes one (the runs behind the README's figures are committed); the summary
    holds the records, faults, invariants and recovery times.
    """
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = RESULTS / f"{label}-{stamp}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return path


def private_stack(workdir: Path) -> LocalStack:
    """A broker of its own (no registry) on free ports, reusing the downloaded jars."""
    return LocalStack.private(workdir / "stack")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--kills", type=int, default=18)
    parser.add_argument("--sigterms", type=int, default=4)
    parser.add_argument("--broker-restarts", type=int, default=0)
    parser.add_argument("--progress", type=int, default=500)
    parser.add_argument("--json", type=Path, help="write the summary here too")
    parser.add_argument(
        "--expect-violations",
        metavar="KIND",
        help="a control run: succeed only if violations of this kind (and no other) are found",
    )
    parser.add_argument(
        "--label", default="chaos", help="name of the result file in tests/chaos/results/"
    )
    parser.add_argument(
        "--key-ordered", action="store_true", help="key-ordered retries; check every record's order"
    )
    parser.add_argument(
        "--check-all-order",
        action="store_true",
        help="check every record's order without key-ordered retries (a control: it should fail)",
    )
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    stack = private_stack(workdir)
    stack.up(with_registry=False)
    try:
        report = Chaos(
            ChaosConfig(
                records=args.records,
                rate=args.rate,
                kills=args.kills,
                sigterms=args.sigterms,
                broker_restarts=args.broker_restarts,
                progress=args.progress,
                finish_timeout_s=900,
                key_ordered=args.key_ordered,
                check_all_order=args.check_all_order,
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
    write_result(args.label, summary)
    if args.expect_violations:
        kinds = {v.kind for v in report.violations}
        return 0 if kinds == {args.expect_violations} else 1
    if not report.violations:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if not report.violations else 1


if __name__ == "__main__":
    sys.exit(main())
