"""The main job: the reference orders pipeline surviving an outage and a crash, verified.

    python -m streams.examples.demo [--orders 20000] [--rate 400] [--workers 2] [--no-faults]
                                    [--keep-running] [--database-url postgresql://...]

In order: brings up the local stack (downloading Kafka and the registry once), starts the
pricing service, recreates the pipeline's topics, starts validate, enrich and store as
supervised worker processes, and writes the orders (2 % of them invalid in five different
ways). While they flow it takes the pricing service down for 10 s (enrich parks records in its
retry topics, validate never waits) and SIGKILLs an enrich worker (the supervisor restarts it;
its open transaction is aborted). At the end it reads the database and the dead-letter topics
and checks: every order stored once or dead-lettered once, none lost. Exit 0 only then.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
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


def main(argv: list[str] | None = None) -> int:  # noqa: C901, PLR0912, PLR0915 - a linear script
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
    service = PricingService(PRICING_PORT).start()
    say(f"pricing service: {service.url}")
    _reset_topics(config)

    log_path = demo_dir / "workers.log"
    env = {
        **os.environ,
        "STREAMS_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "STREAMS_SCHEMA_REGISTRY_URL": kafka.schema_registry_url,
        "STREAMS_SINK_DATABASE_URL": database_url,
        "PRICING_URL": service.url,
        "STREAMS_STAGE_SESSION_TIMEOUT_MS": "6000",
    }
    began = time.monotonic()
    with log_path.open("wb") as log:
        supervisor = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams.cli.main",
                "run",
                REFERENCE,
                "--all",
                "--workers",
                str(args.workers),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    say(
        f"workers: validate, enrich, store x {args.workers} (supervisor pid {supervisor.pid},"
        f" log {log_path})"
    )
    orders = Orders(args.orders, args.rate)
    feeder = threading.Thread(target=orders.feed, args=(config,), daemon=True)
    feeder.start()
    say(
        f"writing {args.orders} orders to {RAW} at {args.rate:,.0f}/s "
        f"({len(orders.invalid)} of them invalid)"
    )

    outage_at, outage_s = 0.25, 10.0
    kill_at = 0.6
    outage_until: float | None = None
    killed = False
    exit_code = 1
    valid = args.orders - len(orders.invalid)
    try:
        while True:
            fed = orders.sent
            progress = fed / args.orders
            if not args.no_faults and outage_until is None and progress >= outage_at:
                service.set_mode("down")
                outage_until = time.monotonic() + outage_s
                say(f"  FAULT: pricing service down for {outage_s:.0f} s (connections refused)")
            if outage_until is not None and 0 < outage_until < time.monotonic():
                service.set_mode("ok")
                outage_until = -1.0
                say("  pricing service back up")
            if not args.no_faults and not killed and progress >= kill_at:
                victims = [p for p, s in _children(supervisor.pid).items() if s == "enrich"]
                if victims:
                    os.kill(victims[0], signal.SIGKILL)
                    killed = True
                    say(
                        f"  FAULT: SIGKILL enrich worker pid {victims[0]} mid-transaction"
                        " (the supervisor restarts it)"
                    )
            validate_lag = _lag(config, "orders.validate", [RAW])
            enrich_lag = _lag(config, "orders.enrich", [PLACED])
            retry_lag = _lag(config, "orders.enrich", pipeline.get("enrich").retry_topics)
            stored = _stored(database)
            say(
                f"  {time.monotonic() - began:6.1f} s  fed {fed:>6}"
                f"  validate lag {_show(validate_lag):>5}"
                f"  enrich lag {_show(enrich_lag):>5} (+{_show(retry_lag):>5} in retry)"
                f"  stored {stored:>6}" + ("" if database else " (PostgreSQL)")
            )
            done = (
                fed >= args.orders
                and validate_lag == 0
                and enrich_lag == 0
                and retry_lag == 0
                and (database is None or stored >= valid)
            )
            if done:
                break
            if supervisor.poll() is not None:
                say(f"supervisor exited early with {supervisor.returncode}; see {log_path}")
                return 1
            if "not restarting" in log_path.read_text(errors="replace"):
                say(f"a worker stopped for good (it needs an operator); see {log_path}")
                return 1
            if time.monotonic() - began > _TIMEOUT_S:
                say(f"timed out after {_TIMEOUT_S} s")
                return 1
            time.sleep(2)
        time.sleep(3)  # the store stage commits its last batch
        elapsed = time.monotonic() - began
        exit_code = _summary(config, orders, database, database_url, elapsed, log_path)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(timeout=90)
        service.stop()
        if started_stack and not args.keep_running:
            stack.down()
            say("local stack stopped (use --keep-running to leave it up)")
    return exit_code


def _stored_ids(database: Path | None, database_url: str) -> list[str]:
    if database is not None:
        with contextlib.closing(sqlite3.connect(database)) as db:
            return [row[0] for row in db.execute("SELECT order_id FROM orders")]
    import psycopg  # noqa: PLC0415 - only for --database-url

    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://")) as db:
        return [row[0] for row in db.execute("SELECT order_id FROM orders")]


def _summary(  # noqa: PLR0917 - private, called once
    config: dict[str, Any],
    orders: Orders,
    database: Path | None,
    database_url: str,
    elapsed: float,
    log_path: Path,
) -> int:
    stored = Counter(_stored_ids(database, database_url))
    dead: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for stage in ("validate", "enrich"):
        for message in _read_all(config, pipeline.get(stage).dlq_topic):
            dead[(message.key() or b"").decode()] += 1
            why = headers.get(list(message.headers() or []), headers.ERROR_REASON) or b"?"
            reasons[f"{stage}: {why.decode()}"] += 1
    retried = sum(len(_read_all(config, topic)) for topic in pipeline.get("enrich").retry_topics)
    everything = {f"o-{n:07d}" for n in range(orders.count)}
    duplicates = sum(n - 1 for n in stored.values() if n > 1) + sum(
        n - 1 for n in dead.values() if n > 1
    )
    both = set(stored) & set(dead)
    lost = everything - set(stored) - set(dead)
    wrongly_stored = set(stored) & set(orders.invalid)
    # the DLQs must hold exactly the invalid orders: a valid order there is a failure too
    wrongly_dead = set(dead) - set(orders.invalid)
    restarts = log_path.read_text(errors="replace").count("worker ended; restarting")
    say("")
    say("summary")
    say(f"  orders in:            {orders.count}")
    say(f"  stored (database):    {len(stored)}")
    say(f"  dead-lettered:        {len(dead)}")
    for reason, count in sorted(reasons.items()):
        say(f"    {reason:<28} {count}")
    say(f"  retried (enrich):     {retried} retry records")
    say(f"  worker restarts:      {restarts}")
    say(f"  duplicates:           {duplicates + len(both)}")
    say(f"  lost:                 {len(lost)}")
    rate = orders.count / elapsed
    say(f"  elapsed:              {elapsed:.1f} s ({rate:,.0f} orders/s end to end)")
    ok = not duplicates and not both and not lost and not wrongly_stored and not wrongly_dead
    if wrongly_stored:
        say(f"  invalid orders stored: {sorted(wrongly_stored)[:5]}")
    if wrongly_dead:
        say(f"  valid orders dead-lettered: {len(wrongly_dead)}, e.g. {sorted(wrongly_dead)[:5]}")
    say(
        "  result:               "
        + (
            "OK: every valid order stored once, every invalid one dead-lettered once"
            if ok
            else "FAILED"
        )
    )
    return 0 if ok else 3


if __name__ == "__main__":
    sys.exit(main())
