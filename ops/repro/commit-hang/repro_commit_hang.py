#!/usr/bin/env python3
"""Minimal reproduction: transactional consume-transform-produce commits hang after a broker restart.

confluent-kafka only (no project code). The script starts a single-node Kafka (KRaft) broker of
its own, feeds an input topic at a steady rate, runs N worker processes (each: one
read_committed consumer + one transactional producer, send_offsets_to_transaction +
commit_transaction every 100 ms, retried on retriable errors within a 20 s deadline, exactly
like streams/kafka/transaction.py, a 120 s watchdog like streams/runtime/worker.py), restarts
the broker (clean = SIGTERM, hard = SIGKILL + 3 s), and prints, for every restart and worker,
how long each transactional call took, with which error, and the recovery time (broker
answering metadata again -> that worker's first successful commit). At the end it checks
exactly-once on the output (every input number exactly once, read_committed).

Needs: java 17+ on PATH and the Kafka 4.1.2 jars (the project's `streams local up` caches them in
~/.streams-local/lib/kafka-4.1.2; any Kafka distribution's libs/ folder works: --kafka-lib DIR),
confluent-kafka (tested: 2.16.1 with librdkafka 2.16.0). Uses free ports and a temp folder;
takes 1-3 minutes per restart without the workaround (the hang lasts until the watchdog).

    python repro_commit_hang.py --restarts clean,hard,clean,hard             # the bug
    python repro_commit_hang.py --restarts clean,hard,clean,hard --hard-deadline   # workaround

Options: --workers 4 --partitions 8 --rate 2000 --kafka-lib DIR --java java --workdir DIR
         --observe 150 --txn-timeout-ms 30000 --deadline 20 --watchdog 120 --debug eos,broker
         --extra JSON (librdkafka settings for producer and consumer, e.g.
                       '{"metadata.recovery.strategy": "none"}')
         --fix (= --hard-deadline + FIX_CLIENT_SETTINGS; the settings made no difference)
Per-worker files in the workdir: wN.events (JSON lines: every transactional call with start,
duration, error code/flags), wN.stderr (librdkafka debug log, eos+broker, with its own unix
timestamps, and faulthandler stack dumps of any call still running after 25 s);
results.json. `python analyze.py WORKDIR HH:MM:SS HH:MM:SS` lists the non-routine events.

What to look for without the workaround: a send_offsets_to_transaction(timeout ~20 s) that
starts during the restart and never returns (the faulthandler dump after 25 s shows it), in the
debug log "Decommissioning 1 broker(s): re-bootstrap", then "AddOffsetsToTxn response ...
NO_ERROR" once the broker is back, then nothing from that call (the TxnOffsetCommit to the group
coordinator waits for a decommissioned broker object: librdkafka#5511/#5456), until the watchdog.

--hard-deadline: every transactional call gets at most 5 s (the 20 s deadline still bounds the
retries) and runs in a helper thread; if it has not returned 2 s after that while a fresh client
gets metadata from the cluster, it is abandoned together with its producer, a new producer with
the same transactional.id is created (init_transactions fences the old one and aborts its open
transaction), and the consumer rewinds to the committed offsets.
"""

from __future__ import annotations

import argparse
import base64
import faulthandler
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
    libversion,
    version,
)
from confluent_kafka.admin import AdminClient, NewTopic

IN, OUT, GROUP = "repro-in", "repro-out", "repro-stage"

# ------------------------------------------------------------------------------------ broker --

SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{cport}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.num.partitions=1
transaction.state.log.num.partitions=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
transaction.abort.timed.out.transaction.cleanup.interval.ms=5000
num.network.threads=2
num.io.threads=4
log.cleaner.dedupe.buffer.size=33554432
"""

LOG4J2 = """\
Configuration:
  Appenders:
    Console: {name: STDOUT, PatternLayout: {pattern: "[%d] %p %m (%c)%n"}}
  Loggers:
    Root: {level: WARN, AppenderRef: [{ref: STDOUT}]}
    Logger:
      - {name: kafka, level: INFO, additivity: false, AppenderRef: [{ref: STDOUT}]}
      - {name: org.apache.kafka, level: WARN, additivity: false, AppenderRef: [{ref: STDOUT}]}
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, workdir: Path, lib: Path, java: str) -> None:
        self.dir = workdir / "broker"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lib, self.java = lib, java
        self.port, self.cport = free_port(), free_port()
        self.props = self.dir / "server.properties"
        self.props.write_text(
            SERVER_PROPERTIES.format(port=self.port, cport=self.cport, data=self.dir / "data")
        )
        (self.dir / "log4j2.yaml").write_text(LOG4J2)
        self.proc: subprocess.Popen[bytes] | None = None
        self.bootstrap = f"127.0.0.1:{self.port}"

    def _jvm(self) -> list[str]:
        return [
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.yaml'}",
            f"-Dkafka.logs.dir={self.dir}",
            "-cp",
            f"{self.lib}/*",
        ]

    def format(self) -> None:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        subprocess.run(
            [self.java, "-Xmx256m", *self._jvm(), "kafka.tools.StorageTool", "format",
             "--ignore-formatted", "-t", cid, "-c", str(self.props)],
            check=True, capture_output=True,
        )

    def start(self) -> None:
        log = (self.dir / "kafka.log").open("ab")
        self.proc = subprocess.Popen(
            [self.java, "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", *self._jvm(), "kafka.Kafka",
             str(self.props)],
            stdout=log, stderr=subprocess.STDOUT,
        )

    def stop(self, hard: bool) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
        self.proc.wait(timeout=120)

    def wait_answers(self, timeout: float = 180) -> float:
        """Poll metadata until the broker answers; returns the wall-clock time it first did."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                md = admin.list_topics(timeout=1)
                if md.brokers:
                    return time.time()
            except KafkaException:
                pass
            time.sleep(0.1)
        raise RuntimeError("broker did not answer")


# ------------------------------------------------------------------------------------ worker --


class Events:
    def __init__(self, path: Path, worker: int) -> None:
        self.f = path.open("a", buffering=1)
        self.w = worker
        self.lock = threading.Lock()

    def __call__(self, kind: str, **fields: object) -> None:
        with self.lock:
            self.f.write(json.dumps({"t": round(time.time(), 3), "w": self.w, "ev": kind, **fields}) + "\n")


def describe(error: BaseException) -> dict[str, object]:
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        e = error.args[0]
        return {"err": e.name(), "retriable": e.retriable(), "abortable": e.txn_requires_abort(),
                "fatal": e.fatal(), "msg": e.str()[:200]}
    return {"err": type(error).__name__, "msg": str(error)[:200]}


class CallTimeout(Exception):
    """--fix: a client call did not return within its hard deadline (it is abandoned)."""


class Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.i = args.worker
        self.ev = Events(Path(args.workdir) / f"w{self.i}.events", self.i)
        self.tid = f"{GROUP}.{self.i}"
        common = {"bootstrap.servers": args.bootstrap}
        if args.fix:
            common.update(FIX_CLIENT_SETTINGS)
        common.update(json.loads(args.extra))
        self.pconf = {
            **common,
            "client.id": f"{self.tid}.producer",
            "transactional.id": self.tid,
            "transaction.timeout.ms": args.txn_timeout_ms,
            "linger.ms": 5,
            "batch.size": 262144,
            "error_cb": lambda e: self.ev("error_cb", err=e.name(), fatal=e.fatal(), msg=e.str()[:200]),
        }
        if args.debug:
            self.pconf["debug"] = args.debug
        self.cconf = {
            **common,
            "group.id": GROUP,
            "client.id": f"{GROUP}.{self.i}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 3333,
            "fetch.queue.backoff.ms": 100,
        }
        self.open = False
        self.opened_at = 0.0
        self.next_offset: dict[tuple[str, int], int] = {}
        self.heartbeat = time.monotonic()
        self.rewind_pending = False

    # -- calls, timed -----------------------------------------------------------------------

    def timed(self, name: str, fn, hard_s: float | None = None, bootstrap=None, until=None):
        """Run fn, logging start/duration/error. With hard_s (--fix) a thread enforces it."""
        t0 = time.time()
        self.ev("call", call=name, phase="start")
        faulthandler.dump_traceback_later(25, repeat=False, file=sys.stderr)
        try:
            if hard_s is None:
                result = fn()
            else:
                result = run_with_deadline(fn, hard_s, bootstrap, until)
        except CallTimeout:
            self.ev("call", call=name, phase="end", dur=round(time.time() - t0, 3), err="HARD_DEADLINE")
            raise
        except KafkaException as error:
            self.ev("call", call=name, phase="end", dur=round(time.time() - t0, 3), **describe(error))
            raise
        finally:
            faulthandler.cancel_dump_traceback_later()
        self.ev("call", call=name, phase="end", dur=round(time.time() - t0, 3), err=None)
        return result

    # -- producer ---------------------------------------------------------------------------

    def limits(self, deadline: float) -> tuple[float, float | None]:
        """(timeout to pass to librdkafka, wall-clock limit of the call or None).

        Baseline (as streams/kafka/transaction.py): the time left to the 20 s deadline, no limit.
        --fix / --hard-deadline: at most FIX_CALL_TIMEOUT_S, and the call is abandoned if it has
        not returned FIX_GRACE_S after that.
        """
        left = max(1.0, deadline - time.monotonic())
        if not (self.a.fix or self.a.hard_deadline):
            return left, None
        timeout = min(left, FIX_CALL_TIMEOUT_S)
        return timeout, timeout + FIX_GRACE_S

    def new_producer(self) -> None:
        self.producer = Producer(self.pconf)
        deadline = time.monotonic() + self.a.deadline
        while True:
            p = self.producer
            timeout, hard = self.limits(deadline)
            try:
                self.timed("init_transactions", lambda: p.init_transactions(timeout), hard,
                           self.a.bootstrap, deadline + FIX_GRACE_S)
                return
            except CallTimeout:
                self.abandon(p)
                self.producer = Producer(self.pconf)
            except KafkaException as error:
                e = error.args[0]
                if not (e.retriable() and time.monotonic() < deadline):
                    raise
            if time.monotonic() > deadline:
                raise RuntimeError("init_transactions did not succeed within the deadline")

    def abandon(self, producer: Producer) -> None:
        """--fix: walk away from a producer stuck in a call; its transactional.id is reused.

        It is never destroyed while a thread is inside it: the helper thread that runs the stuck
        call drops the last reference when (if ever) the call returns.
        """
        self.ev("abandon_producer")
        ABANDONED.add(id(producer))

    def reset(self, why: str) -> None:
        self.ev("reset_producer", why=why)
        old = self.producer
        if id(old) not in ABANDONED:
            try:
                old.flush(0)
            except KafkaException:
                pass
        del old
        self.producer = None
        self.open = False
        self.new_producer()

    def retrying(self, name: str, call, deadline: float) -> None:
        """call(timeout) until success; retriable errors are retried until the deadline."""
        while True:
            timeout, hard = self.limits(deadline)
            try:
                self.timed(name, lambda: call(timeout), hard, self.a.bootstrap, deadline + FIX_GRACE_S)
                return
            except KafkaException as error:
                e = error.args[0]
                if e.retriable() and not e.txn_requires_abort():
                    if time.monotonic() < deadline:
                        time.sleep(0.1)
                        continue
                    raise Indeterminate(name) from error
                raise

    # -- the loop ---------------------------------------------------------------------------

    def commit(self) -> None:
        if not self.open:
            return
        t0 = time.time()
        deadline = time.monotonic() + self.a.deadline
        offsets = [TopicPartition(t, p, o) for (t, p), o in self.next_offset.items()]
        p = self.producer
        try:
            if offsets:
                md = self.timed("consumer_group_metadata", self.consumer.consumer_group_metadata)
                self.retrying(
                    "send_offsets_to_transaction",
                    lambda timeout: p.send_offsets_to_transaction(offsets, md, timeout),
                    deadline,
                )
            self.retrying("commit_transaction", lambda timeout: p.commit_transaction(timeout),
                          deadline)
        except CallTimeout:
            self.abandon(p)
            del p
            self.recover("hard deadline")
            return
        except Indeterminate as error:
            del p
            self.recover(f"indeterminate {error}")
            return
        except KafkaException as error:
            del p
            e = error.args[0]
            if e.txn_requires_abort() and not e.fatal():
                self.abort_then_rewind()
            else:
                self.recover(f"fatal {e.name()}")
            return
        self.open = False
        self.ev("commit_ok", took=round(time.time() - t0, 3), partitions=len(offsets),
                records=self.in_txn)
        self.next_offset.clear()
        self.in_txn = 0

    def abort_then_rewind(self) -> None:
        deadline = time.monotonic() + self.a.deadline
        p = self.producer
        try:
            _timeout, hard = self.limits(time.monotonic() + 5.0)
            self.timed("flush", lambda: p.flush(5.0), None if hard is None else 5.0 + FIX_GRACE_S)
            self.retrying("abort_transaction", lambda timeout: p.abort_transaction(timeout), deadline)
            self.open = False
        except CallTimeout:
            self.abandon(p)
            del p
            self.reset("abort hard deadline")
        except (KafkaException, Indeterminate) as error:
            del p
            self.reset(f"abort failed {error}")
        self.rewind()

    def recover(self, why: str) -> None:
        self.reset(why)
        self.rewind()

    def rewind(self) -> None:
        self.next_offset.clear()
        self.in_txn = 0
        assignment = self.consumer.assignment()
        if not assignment:
            return
        committed = self.timed("committed", lambda: self.consumer.committed(assignment, timeout=30))
        for tp in committed:
            try:
                self.consumer.seek(TopicPartition(tp.topic, tp.partition,
                                                  tp.offset if tp.offset >= 0 else OFFSET_BEGINNING))
            except KafkaException:
                pass
        self.ev("rewind", partitions=len(committed))

    def on_assign(self, _c, parts) -> None:
        self.ev("assign", partitions=[tp.partition for tp in parts])

    def on_revoke(self, _c, parts) -> None:
        self.ev("revoke", partitions=[tp.partition for tp in parts])
        if self.open:
            self.commit()
        for tp in parts:
            self.next_offset.pop((tp.topic, tp.partition), None)

    def on_lost(self, _c, parts) -> None:
        self.ev("lost", partitions=[tp.partition for tp in parts])
        if self.open:
            self.abort_then_rewind()
            self.rewind_pending = True

    def watchdog(self) -> None:
        while True:
            time.sleep(5)
            stuck = time.monotonic() - self.heartbeat
            if stuck > self.a.watchdog:
                self.ev("watchdog", stuck=round(stuck, 1))
                faulthandler.dump_traceback(all_threads=True)
                os._exit(1)

    def run(self) -> None:
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        self.ev("start", fix=self.a.fix, librdkafka=libversion()[0], confluent_kafka=version()[0])
        self.in_txn = 0
        self.new_producer()
        self.consumer = Consumer(self.cconf)
        self.consumer.subscribe([IN], on_assign=self.on_assign, on_revoke=self.on_revoke,
                                on_lost=self.on_lost)
        threading.Thread(target=self.watchdog, daemon=True).start()
        while True:
            self.heartbeat = time.monotonic()
            try:
                self.producer.poll(0)
            except KafkaException as error:
                self.ev("poll_error", **describe(error))
            timeout = 0.1
            if self.open:
                timeout = max(0.0, min(0.1, 0.1 - (time.monotonic() - self.opened_at)))
            msgs = self.consumer.consume(500, timeout=timeout)
            if self.rewind_pending:
                self.rewind_pending = False
                self.rewind()
                continue
            try:
                for m in msgs:
                    if m.error():
                        self.ev("consumer_error", err=m.error().name(), msg=m.error().str()[:200])
                        if m.error().fatal():
                            os._exit(1)
                        continue
                    if not self.open:
                        self.timed("begin_transaction", self.producer.begin_transaction)
                        self.open, self.opened_at = True, time.monotonic()
                    while True:
                        try:
                            self.producer.produce(OUT, m.value(), m.key())
                            break
                        except BufferError:
                            self.producer.poll(0.05)
                    self.next_offset[(m.topic(), m.partition())] = m.offset() + 1
                    self.in_txn += 1
            except KafkaException as error:
                self.ev("produce_error", **describe(error))
                e = error.args[0]
                if e.txn_requires_abort() and not e.fatal():
                    self.abort_then_rewind()
                else:
                    self.recover(f"produce {e.name()}")
                continue
            if self.open and time.monotonic() - self.opened_at >= 0.1:
                self.commit()


class Indeterminate(Exception):
    pass


# ----------------------------------------------------------------------------------- the fix --

# Client settings of the workaround (applied to producer and consumer with --fix).
FIX_CLIENT_SETTINGS: dict[str, object] = {
    # notice a restarted broker fast: reconnect within 1 s instead of backing off up to 10 s
    "reconnect.backoff.max.ms": 1000,
    # an in-flight request to a dead connection fails after 10 s instead of 60 s
    "socket.timeout.ms": 10000,
    # a stale coordinator / broker list is refreshed sooner
    "topic.metadata.refresh.interval.ms": 10000,
}
# --fix: each transactional call gets at most this timeout (the 20 s deadline still bounds the
# retries), and is abandoned, with its producer, if it has not returned FIX_GRACE_S later
FIX_CALL_TIMEOUT_S = 5.0
FIX_GRACE_S = 2.0


# ids of producers abandoned inside a call (--fix)
ABANDONED: set[int] = set()


def cluster_answers(bootstrap: str) -> bool:
    """True if a fresh client gets metadata (a producer stuck in the hang often cannot)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        return bool(admin.list_topics(timeout=1.0).brokers)
    except KafkaException:
        return False


def run_with_deadline(fn, limit_s: float, bootstrap: str | None = None, until: float | None = None):
    """Call fn in a helper thread (librdkafka releases the GIL); CallTimeout if it hangs.

    Past limit_s the call hangs if the cluster answers a fresh client meanwhile (a healthy call returns
    within its timeout once the broker is up); while the broker does not answer, the call may be
    waiting for it and is given until `until` (monotonic). The thread is a daemon: a call that
    never returns does not keep the process alive; if it does return, the thread ends and the
    closure's reference to the producer goes with it.
    """
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as error:  # noqa: BLE001
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True, name="txn-call")
    thread.start()
    thread.join(limit_s)
    while thread.is_alive():
        if bootstrap is None or until is None or time.monotonic() >= until or cluster_answers(bootstrap):
            thread.join(0.1)
            if thread.is_alive():
                raise CallTimeout(f"still running after {limit_s:.1f} s")
            break
        thread.join(FIX_GRACE_S)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("value")


# ---------------------------------------------------------------------------------- the driver --


def feed(bootstrap: str, rate: float, stop: threading.Event, counter: list[int]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 10,
                  "log_level": 0})
    began = time.monotonic()
    n = 0
    while not stop.is_set():
        ahead = n / rate - (time.monotonic() - began)
        if ahead > 0:
            time.sleep(min(ahead, 0.05))
            continue
        try:
            p.produce(IN, str(n).encode(), key=f"k{n % 64}".encode())
            n += 1
            counter[0] = n
        except BufferError:
            p.poll(0.1)
        p.poll(0)
    p.flush(120)


def read_all(bootstrap: str, topic: str, partitions: int) -> list[int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex}",
                  "isolation.level": "read_committed", "enable.auto.commit": False,
                  "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    values, eof = [], set()
    while len(eof) < partitions:
        for m in c.consume(1000, timeout=1.0):
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                continue
            values.append(int(m.value()))
    c.close()
    return values


def committed_total(bootstrap: str, partitions: int) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP, "log_level": 0})
    try:
        return sum(max(0, tp.offset) for tp in
                   c.committed([TopicPartition(IN, p) for p in range(partitions)], timeout=10))
    finally:
        c.close()


def read_events(workdir: Path) -> list[dict]:
    out = []
    for f in sorted(workdir.glob("w*.events")):
        for line in f.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def main_driver(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="repro-commit-hang-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"confluent-kafka {version()[0]}, librdkafka {libversion()[0]}, workdir {workdir}, "
          f"fix={args.fix} hard_deadline={args.hard_deadline} extra={args.extra}", flush=True)
    broker = Broker(workdir, Path(args.kafka_lib).expanduser(), args.java)
    broker.format()
    broker.start()
    broker.wait_answers()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, "log_level": 0})
    for f in admin.create_topics([NewTopic(t, args.partitions, 1) for t in (IN, OUT)]).values():
        f.result(30)
    time.sleep(1)
    stop, fed = threading.Event(), [0]
    feeder = threading.Thread(target=feed, args=(broker.bootstrap, args.rate, stop, fed), daemon=True)
    feeder.start()

    workers: dict[int, subprocess.Popen[bytes]] = {}

    def start_worker(i: int) -> None:
        argv = [sys.executable, __file__, "--worker", str(i), "--bootstrap", broker.bootstrap,
                "--workdir", str(workdir), "--deadline", str(args.deadline),
                "--txn-timeout-ms", str(args.txn_timeout_ms), "--watchdog", str(args.watchdog),
                "--debug", args.debug]
        if args.fix:
            argv.append("--fix")
        if args.hard_deadline:
            argv.append("--hard-deadline")
        argv += ["--extra", args.extra]
        err = (workdir / f"w{i}.stderr").open("ab")
        workers[i] = subprocess.Popen(argv, stdout=err, stderr=subprocess.STDOUT)

    def revive() -> None:
        for i, proc in list(workers.items()):
            if proc.poll() is not None:
                print(f"  {time.strftime('%H:%M:%S')} worker {i} exited {proc.returncode}: restarted",
                      flush=True)
                start_worker(i)

    for i in range(args.workers):
        start_worker(i)
    # warm up: every worker has committed
    t_end = time.time() + 90
    while time.time() < t_end:
        ok = {e["w"] for e in read_events(workdir) if e["ev"] == "commit_ok"}
        if len(ok) == args.workers:
            break
        time.sleep(1)
    time.sleep(args.warmup)

    results = []
    try:
        for n, kind in enumerate(k for k in args.restarts.split(",") if k):
            t_fault = time.time()
            print(f"restart {n + 1}: {kind} at {time.strftime('%H:%M:%S')}", flush=True)
            broker.stop(hard=(kind == "hard"))
            t_down = time.time()
            if kind == "hard":
                time.sleep(3)  # as the project's chaos harness does
            broker.start()
            t_answer = broker.wait_answers()
            print(f"  broker down {t_down - t_fault:.1f} s after the signal, answering "
                  f"{t_answer - t_fault:.1f} s after it", flush=True)
            deadline = t_answer + args.observe
            first: dict[int, float] = {}
            while time.time() < deadline:
                revive()
                for e in read_events(workdir):
                    if e["ev"] == "commit_ok" and e["t"] > t_answer and e["w"] not in first:
                        first[e["w"]] = e["t"]
                if len(first) == args.workers and time.time() > max(first.values()) + 5:
                    break
                time.sleep(0.5)
            evs = [e for e in read_events(workdir) if t_fault <= e["t"] <= max([*first.values(), t_answer]) + 1]
            calls = [e for e in evs if e["ev"] == "call" and e.get("phase") == "end" and (e.get("err") or e["dur"] > 2)]
            per = {i: round(first[i] - t_answer, 1) if i in first else None for i in range(args.workers)}
            print(f"  recovery (broker answering -> first commit) per worker, s: {per}", flush=True)
            for e in calls[:60]:
                print(f"    {time.strftime('%H:%M:%S', time.localtime(e['t']))} w{e['w']} {e['call']:<28} "
                      f"{e['dur']:7.2f}s {e.get('err')} {'' if e.get('err') in (None, 'HARD_DEADLINE') else e.get('msg', '')[:90]}",
                      flush=True)
            if len(calls) > 60:
                print(f"    ... {len(calls) - 60} more", flush=True)
            for e in evs:
                if e["ev"] in ("watchdog", "reset_producer", "abandon_producer"):
                    print(f"    {time.strftime('%H:%M:%S', time.localtime(e['t']))} w{e['w']} {e['ev']} "
                          f"{e.get('why', e.get('stuck', ''))}", flush=True)
            results.append({"kind": kind, "t_answer": t_answer,
                            "down_s": round(t_down - t_fault, 1),
                            "answer_after_fault_s": round(t_answer - t_fault, 1), "recovery_s": per})
            time.sleep(args.warmup)
        # exactly-once check
        stop.set()
        feeder.join(120)
        total = fed[0]
        t_end = time.time() + 180
        while time.time() < t_end:
            revive()
            try:
                if committed_total(broker.bootstrap, args.partitions) >= total:
                    break
            except KafkaException:
                pass
            time.sleep(1)
        values = read_all(broker.bootstrap, OUT, args.partitions)
        dup = len(values) - len(set(values))
        missing = total - len(set(values))
        print(f"exactly-once: fed {total}, output {len(values)}, duplicates {dup}, missing {missing}",
              flush=True)
    finally:
        for proc in workers.values():
            proc.kill()
        for proc in workers.values():
            proc.wait()
        broker.stop(hard=False)
    (workdir / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps([{k: r[k] for k in ("kind", "answer_after_fault_s", "recovery_s")} for r in results]))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--restarts", default="clean,hard")
    ap.add_argument("--fix", action="store_true", help="the workaround: --hard-deadline + FIX_CLIENT_SETTINGS")
    ap.add_argument("--hard-deadline", action="store_true", help="only the per-call wall-clock deadline")
    ap.add_argument("--extra", default="{}", help="JSON: extra librdkafka settings for producer and consumer")
    ap.add_argument("--kafka-lib", default="~/.streams-local/lib/kafka-4.1.2")
    ap.add_argument("--java", default="java")
    ap.add_argument("--workdir")
    ap.add_argument("--observe", type=float, default=150)
    ap.add_argument("--warmup", type=float, default=10)
    ap.add_argument("--txn-timeout-ms", type=int, default=30000)
    ap.add_argument("--deadline", type=float, default=20)
    ap.add_argument("--watchdog", type=float, default=120)
    ap.add_argument("--debug", default="eos,broker")
    ap.add_argument("--worker", type=int)  # internal: run one worker
    ap.add_argument("--bootstrap")
    args = ap.parse_args()
    if args.worker is not None:
        Worker(args).run()
        return 0
    return main_driver(args)


if __name__ == "__main__":
    sys.exit(main())
