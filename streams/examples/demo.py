"""The main job: the reference orders pipeline surviving an outage and a crash, verified.

    python -m streams.examples.demo [--orders 20000] [--rate 400] [--workers 2] [--no-faults]
                                    [--keep-running] [--database-url postgresql://...]

In order: brings up the local stack (downloading Kafka and the registry once), starts the
pricing service, recreates the pipeline's topics, starts validate, enrich, store and totals as
supervised worker processes, and writes the orders (2 % of them invalid in five different
ways). While they flow it takes the pricing service down for 20 s (enrich parks records in its
retry topics, validate never waits) and SIGKILLs an enrich worker (the supervisor restarts it;
its open transaction is aborted). The outage outlasts enrich's 3 attempts for the orders of its
first seconds, so they land in orders.enrich.dlq; once the service is back and the pipeline has
drained, the demo redrives them (``streams dlq redrive ... --stage enrich --execute``). At the
end it reads the database and the dead-letter topics and checks: every valid order stored once
(the dead-lettered ones after their redrive), every invalid one dead-lettered once, none lost;
and the totals stage's window totals against a recomputation from the stored orders
(``streams.examples.totals``). Exit 0 only then.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams import headers
from streams.config import KafkaSettings, LocalStackSettings
from streams.examples.orders import PLACED, RAW, pipeline
from streams.examples.pricing_service import PricingService
from streams.examples.totals import verify_totals
from streams.localstack.stack import LocalStack
from streams.topics import ensure_topics

REFERENCE = "streams.examples.orders:pipeline"
PRICING_PORT = 18090
# the output is complete when 6 polls in a row (3 s) return nothing
_QUIET_POLLS = 6
_TIMEOUT_S = 900
_INVALID_KINDS = ("bad-json", "missing-field", "bad-sku", "zero-quantity", "huge-quantity")


def say(message: str) -> None:
    print(message, flush=True)  # noqa: T201 - the demo's output is for people


def _children(pid: int) -> dict[int, str]:
    """Worker processes of the supervisor: pid -> stage."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != pid:
                continue
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if b"--stage" in argv:
            found[int(proc.name)] = argv[argv.index(b"--stage") + 1].decode()
    return found


class Orders:
    """Writes the demo's orders at a steady rate and remembers which ones are invalid."""

    def __init__(self, count: int, rate: float, invalid_share: float = 0.02) -> None:
        self.count = count
        self.rate = rate
        rng = random.Random(7)  # noqa: S311 - demo data, not security
        self.invalid: dict[str, str] = {}
        for n in range(count):
            if rng.random() < invalid_share:
                self.invalid[f"o-{n:07d}"] = _INVALID_KINDS[n % len(_INVALID_KINDS)]
        self.sent = 0

    def payload(self, n: int, rng: random.Random) -> bytes:
        order_id = f"o-{n:07d}"
        order: dict[str, Any] = {
            "order_id": order_id,
            "customer_id": f"c-{rng.randrange(500):03d}",
            "sku": f"sku-{rng.randrange(50):02d}",
            "quantity": rng.randrange(1, 5),
            "placed_at": datetime.now(UTC).isoformat(),
        }
        kind = self.invalid.get(order_id)
        if kind == "bad-json":
            return b'{"order_id": "' + order_id.encode() + b'", "quantity": '
        if kind == "missing-field":
            del order["customer_id"]
        elif kind == "bad-sku":
            order["sku"] = "SKU 12"
        elif kind == "zero-quantity":
            order["quantity"] = 0
        elif kind == "huge-quantity":
            order["quantity"] = 500
        return json.dumps(order).encode()

    def feed(self, config: dict[str, Any]) -> None:
        producer = Producer({**config, "enable.idempotence": True, "linger.ms": 20})
        rng = random.Random(11)  # noqa: S311 - demo data
        began = time.monotonic()
        for n in range(self.count):
            ahead = n / self.rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)  # a steady stream, so that the faults land while orders flow
            while True:
                try:
                    producer.produce(RAW, self.payload(n, rng), key=f"o-{n:07d}".encode())
                    break
                except BufferError:
                    producer.poll(0.1)
            self.sent = n + 1
        producer.flush(60)


def _lag(config: dict[str, Any], group: str, topics: list[str]) -> int | None:
    """Records the group has yet to commit (last stable offset - committed); None if unknown."""
    consumer = Consumer({**config, "group.id": group, "isolation.level": "read_committed"})
    total = 0
    try:
        parts = [TopicPartition(t, p) for t in topics for p in range(pipeline.default_partitions)]
        for tp in consumer.committed(parts, timeout=10):
            _low, stable = consumer.get_watermark_offsets(tp, timeout=10)
            total += max(0, stable - max(tp.offset, 0))
    except KafkaException:
        return None  # a leader moving (new topics): ask again next time
    finally:
        consumer.close()
    return total


def _show(value: int | None) -> str:
    return "?" if value is None else str(value)


def _read_all(config: dict[str, Any], topic: str) -> list[Any]:
    consumer = Consumer(
        {
            **config,
            "group.id": f"demo-read-{time.time_ns()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(pipeline.default_partitions)])
    out: list[Any] = []
    quiet = 0
    while quiet < _QUIET_POLLS:
        batch = consumer.consume(2000, timeout=0.5)
        quiet = 0 if batch else quiet + 1
        out.extend(m for m in batch if m.error() is None)
    consumer.close()
    return out


def _reset_topics(config: dict[str, Any]) -> None:
    admin = AdminClient(config)
    names = [spec.name for spec in pipeline.topic_specs()]
    existing = set(admin.list_topics(timeout=30).topics)
    doomed = [n for n in names if n in existing]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            future.result()
        while set(admin.list_topics(timeout=30).topics) & set(doomed):
            time.sleep(0.5)
    groups = [stage.group_id for stage in pipeline.stages]
    for future in admin.delete_consumer_groups(groups, request_timeout=30).values():
        with contextlib.suppress(KafkaException):  # the group does not exist yet
            future.result()
    ensure_topics(pipeline, kafka=KafkaSettings(bootstrap_servers=config["bootstrap.servers"]))
    deadline = time.monotonic() + 60
    while set(names) - set(admin.list_topics(timeout=30).topics):
        if time.monotonic() > deadline:
            msg = f"topics not visible 60 s after creation: {sorted(set(names))}"
            raise RuntimeError(msg)
        time.sleep(0.5)  # a broker that has just started can list new topics a moment late
    say(f"topics: {len(names)} created (inputs, outputs, retry tiers and a DLQ per stage)")


def _stored(database: Path | None) -> int:
    if database is None or not database.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            return int(db.execute("SELECT count(*) FROM orders").fetchone()[0])
    except sqlite3.Error:
        return 0  # the table is not created yet


# The demo's settings for the workers: enrich gives up after 3 attempts (the first, then the
# 2 s and 10 s tiers), so that the pricing outage dead-letters the orders of its first seconds;
# the totals' windows are 10 s with a 15 s grace, so that windows close within the demo's minute
# (an order retried through the 10 s tier still folds into its window; a redriven one is late).
DEMO_WORKER_ENV = {
    "ORDERS_ENRICH_MAX_ATTEMPTS": "3",
    "ORDERS_TOTALS_WINDOW_S": "10",
    "ORDERS_TOTALS_GRACE_S": "15",
    "STREAMS_STAGE_SESSION_TIMEOUT_MS": "6000",
}
_OUTAGE_AT, _OUTAGE_S, _KILL_AT = 0.25, 20.0, 0.6
_STREAMS = (sys.executable, "-m", "streams.cli.main")


class DemoFailedError(Exception):
    """A step of the demo failed; the message says which."""


class Run:
    """The demo's running pipeline: the supervisor, the feeder, the faults, the lags."""

    def __init__(
        self,
        args: argparse.Namespace,
        config: dict[str, Any],
        env: dict[str, str],
        database: Path | None,
        log_path: Path,
    ) -> None:
        self.args = args
        self.config = config
        self.env = env
        self.database = database
        self.log_path = log_path
        self.orders = Orders(args.orders, args.rate)
        self.valid = args.orders - len(self.orders.invalid)
        self.began = time.monotonic()
        self.outage_until: float | None = None
        self.killed = False
        self.supervisor: subprocess.Popen[bytes] | None = None

    def start(self, service: PricingService) -> None:
        self.service = service
        with self.log_path.open("wb") as log:
            self.supervisor = subprocess.Popen(
                [*_STREAMS, "run", REFERENCE, "--all", "--workers", str(self.args.workers)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        say(
            f"workers: validate, enrich, store, totals x {self.args.workers} (supervisor pid "
            f"{self.supervisor.pid}, log {self.log_path})"
        )
        feeder = threading.Thread(target=self.orders.feed, args=(self.config,), daemon=True)
        feeder.start()
        say(
            f"writing {self.args.orders} orders to {RAW} at {self.args.rate:,.0f}/s "
            f"({len(self.orders.invalid)} of them invalid)"
        )

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.send_signal(signal.SIGTERM)
            self.supervisor.wait(timeout=90)

    def _faults(self, progress: float) -> None:
        if self.args.no_faults:
            return
        if self.outage_until is None and progress >= _OUTAGE_AT:
            self.service.set_mode("down")
            self.outage_until = time.monotonic() + _OUTAGE_S
            say(
                f"  FAULT: pricing service down for {_OUTAGE_S:.0f} s (connections refused;"
                " enrich gives up on an order after 3 attempts)"
            )
        if self.outage_until is not None and 0 < self.outage_until < time.monotonic():
            self.service.set_mode("ok")
            self.outage_until = -1.0
            say("  pricing service back up")
        if not self.killed and progress >= _KILL_AT and self.supervisor is not None:
            victims = [p for p, s in _children(self.supervisor.pid).items() if s == "enrich"]
            if victims:
                os.kill(victims[0], signal.SIGKILL)
                self.killed = True
                say(
                    f"  FAULT: SIGKILL enrich worker pid {victims[0]} mid-transaction"
                    " (the supervisor restarts it)"
                )

    def wait(self, *, stored_at_least: int) -> int | None:
        """Poll until every order is fed, no stage has lag and ``stored_at_least`` rows are
        stored; None when done, else the exit code (a worker stopped for good, a timeout)."""
        while True:
            fed = self.orders.sent
            self._faults(fed / self.args.orders)
            lags = {
                "validate": _lag(self.config, "orders.validate", [RAW]),
                "enrich": _lag(self.config, "orders.enrich", [PLACED]),
                "retry": _lag(self.config, "orders.enrich", pipeline.get("enrich").retry_topics),
                "totals": _lag(self.config, "orders.totals", TOTALS_TOPICS),
            }
            stored = _stored(self.database)
            say(
                f"  {time.monotonic() - self.began:6.1f} s  fed {fed:>6}"
                f"  validate lag {_show(lags['validate']):>5}"
                f"  enrich lag {_show(lags['enrich']):>5} (+{_show(lags['retry']):>5} in retry)"
                f"  totals lag {_show(lags['totals']):>5}"
                f"  stored {stored:>6}" + ("" if self.database else " (PostgreSQL)")
            )
            if (
                fed >= self.args.orders
                and all(lag == 0 for lag in lags.values())
                and (self.database is None or stored >= stored_at_least)
                and (self.outage_until is None or self.outage_until < 0)
            ):
                return None
            assert self.supervisor is not None  # noqa: S101 - started first
            if self.supervisor.poll() is not None:
                code = self.supervisor.returncode
                say(f"supervisor exited early with {code}; see {self.log_path}")
                return 1
            if "not restarting" in self.log_path.read_text(errors="replace"):
                say(f"a worker stopped for good (it needs an operator); see {self.log_path}")
                return 1
            if time.monotonic() - self.began > _TIMEOUT_S:
                say(f"timed out after {_TIMEOUT_S} s")
                return 1
            time.sleep(2)

    def redrive(self) -> list[Any]:
        """The orders the outage dead-lettered, redriven into enrich's first retry tier."""
        letters = _read_all(self.config, pipeline.get("enrich").dlq_topic)
        if not letters:
            return letters
        command = ["dlq", "redrive", REFERENCE, "--stage", "enrich", "--execute"]
        say("")
        say(
            f"the pricing outage outlasted enrich's retries for {len(letters)} orders (in "
            "orders.enrich.dlq); the service is back, so they are redriven:"
        )
        say(f"  $ streams {' '.join(command)}")
        done = subprocess.run(
            [*_STREAMS, *command],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        for line in done.stdout.splitlines():
            say(f"  {line}")
        if done.returncode != 0:
            raise DemoFailedError(f"the redrive exited with {done.returncode}")
        return letters


TOTALS_TOPICS = pipeline.component("totals").subscriptions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=400, help="orders written per second")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per stage")
    parser.add_argument("--no-faults", action="store_true", help="no outage, no kill")
    parser.add_argument("--keep-running", action="store_true", help="leave the stack up")
    parser.add_argument("--database-url", help="PostgreSQL URL for the store stage")
    args = parser.parse_args(argv)

    stack = LocalStack()
    started_stack = not stack.status().running
    if started_stack:
        say("starting the local stack (the first run downloads Kafka and the registry)...")
        # the main job just runs: a pid file left by a crash or a reboot is removed (and said)
        stack.up(progress=lambda m: say(f"  {m}"), clear_stale=True)
    local = LocalStackSettings()
    kafka = KafkaSettings(
        bootstrap_servers=local.bootstrap_servers, schema_registry_url=local.schema_registry_url
    )
    config: dict[str, Any] = kafka.client_config()
    demo_dir = local.home / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    database: Path | None = None
    database_url = args.database_url
    if database_url is None:
        database = demo_dir / "orders.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        database_url = f"sqlite:///{database}"  # absolute: four slashes
    state_dir = demo_dir / "state"
    shutil.rmtree(state_dir, ignore_errors=True)
    service = PricingService(PRICING_PORT).start()
    say(f"pricing service: {service.url}")
    _reset_topics(config)

    env = {
        **os.environ,
        "STREAMS_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "STREAMS_SCHEMA_REGISTRY_URL": kafka.schema_registry_url,
        "STREAMS_SINK_DATABASE_URL": database_url,
        "PRICING_URL": service.url,
        # the totals' local state: a cache of its changelog, which _reset_topics recreated
        "STREAMS_STATE_DIR": str(state_dir),
        **DEMO_WORKER_ENV,
    }
    run = Run(args, config, env, database, demo_dir / "workers.log")
    exit_code = 1
    try:
        run.start(service)
        exit_code = _job(run, database_url, kafka.schema_registry_url)
    finally:
        run.stop()
        service.stop()
        if started_stack and not args.keep_running:
            stack.down()
            say("local stack stopped (use --keep-running to leave it up)")
    return exit_code


def _job(run: Run, database_url: str, registry_url: str) -> int:
    """The pipeline's run after start: drain, redrive what the outage dead-lettered, check."""
    # first everything the outage did not dead-letter; then the redrive brings the rest
    failed = run.wait(stored_at_least=0)
    if failed is not None:
        return failed
    try:
        redriven = run.redrive()
    except DemoFailedError as error:
        say(str(error))
        return 1
    failed = run.wait(stored_at_least=run.valid)
    if failed is not None:
        return failed
    time.sleep(3)  # the store stage commits its last batch
    elapsed = time.monotonic() - run.began
    return _summary(run, redriven, database_url, elapsed, registry_url)


def _stored_ids(database: Path | None, database_url: str) -> list[str]:
    if database is not None:
        with contextlib.closing(sqlite3.connect(database)) as db:
            return [row[0] for row in db.execute("SELECT order_id FROM orders")]
    import psycopg  # noqa: PLC0415 - only for --database-url

    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://")) as db:
        return [row[0] for row in db.execute("SELECT order_id FROM orders")]


def _summary(
    run: Run, redriven: list[Any], database_url: str, elapsed: float, registry_url: str
) -> int:
    config, orders = run.config, run.orders
    stored = Counter(_stored_ids(run.database, database_url))
    dead: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for message in _read_all(config, pipeline.get("validate").dlq_topic):
        dead[(message.key() or b"").decode()] += 1
        why = headers.get(list(message.headers() or []), headers.ERROR_REASON) or b"?"
        reasons[f"validate: {why.decode()}"] += 1
    outage: Counter[str] = Counter()
    for message in redriven:
        outage[(message.key() or b"").decode()] += 1  # the key is the order id
        why = headers.get(list(message.headers() or []), headers.ERROR_REASON) or b"?"
        reasons[f"enrich: {why.decode()}"] += 1
    retried = sum(len(_read_all(config, topic)) for topic in pipeline.get("enrich").retry_topics)
    everything = {f"o-{n:07d}" for n in range(orders.count)}
    duplicates = sum(n - 1 for n in stored.values() if n > 1) + sum(
        n - 1 for n in (dead + outage).values() if n > 1
    )
    both = set(stored) & set(dead)
    lost = everything - set(stored) - set(dead)
    wrongly_stored = set(stored) & set(orders.invalid)
    # validate's DLQ must hold exactly the invalid orders: a valid order there is a failure too
    wrongly_dead = set(dead) - set(orders.invalid)
    # every order the outage dead-lettered is stored once, after its redrive
    not_back = set(outage) - set(stored)
    restarts = run.log_path.read_text(errors="replace").count("worker ended; restarting")
    say("")
    say("summary")
    say(f"  orders in:            {orders.count}")
    say(f"  stored (database):    {len(stored)}")
    say(f"  dead-lettered:        {len(dead) + len(outage)}")
    for reason, count in sorted(reasons.items()):
        say(f"    {reason:<28} {count}")
    say(f"  redriven, then stored: {len(set(outage) & set(stored))} of {len(outage)}")
    say(f"  retried (enrich):     {retried} retry records")
    say(f"  worker restarts:      {restarts}")
    say(f"  duplicates:           {duplicates + len(both)}")
    say(f"  lost:                 {len(lost) + len(not_back)}")
    rate = orders.count / elapsed
    say(f"  elapsed:              {elapsed:.1f} s ({rate:,.0f} orders/s end to end)")
    ok = not (duplicates or both or lost or wrongly_stored or wrongly_dead or not_back)
    if wrongly_stored:
        say(f"  invalid orders stored: {sorted(wrongly_stored)[:5]}")
    if wrongly_dead:
        say(f"  valid orders dead-lettered: {len(wrongly_dead)}, e.g. {sorted(wrongly_dead)[:5]}")
    if not_back:
        say(f"  redriven orders not stored: {len(not_back)}, e.g. {sorted(not_back)[:5]}")
    say(
        "  result:               "
        + (
            "OK: every valid order stored once (the dead-lettered ones after their redrive),"
            " every invalid one dead-lettered once"
            if ok
            else "FAILED"
        )
    )
    say("")
    say("totals (revenue per customer in 10 s windows, checked against the stored orders)")
    report = verify_totals(
        config,
        database=run.database,
        database_url=database_url,
        schema_registry_url=registry_url,
        window_s=float(DEMO_WORKER_ENV["ORDERS_TOTALS_WINDOW_S"]),
        grace_s=float(DEMO_WORKER_ENV["ORDERS_TOTALS_GRACE_S"]),
    )
    for line in report.lines():
        say(f"  {line}")
    return 0 if ok and report.ok else 3


if __name__ == "__main__":
    sys.exit(main())
