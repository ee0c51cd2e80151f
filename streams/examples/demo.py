"""The main job: run the hello orders pipeline on the local stack, crash a worker, verify.

    python -m streams.examples.demo [--orders 20000] [--workers 2] [--no-faults] [--keep-running]

What it does, in order: brings the local stack up (downloading Kafka and the registry once),
recreates the pipeline's topics, starts every stage as supervised worker processes, writes the
orders, SIGKILLs one worker mid-stream (the supervisor restarts it; its open transaction is
aborted), waits until the last stage has committed every order, then reads the output with a
read_committed consumer and checks that each order is there exactly once. Exit 0 only if no
order was lost or duplicated.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
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

from streams.config import KafkaSettings, LocalStackSettings
from streams.examples.hello import PRICED, RAW, RawOrder, pipeline
from streams.localstack.stack import LocalStack
from streams.topics import ensure_topics

REFERENCE = "streams.examples.hello:pipeline"
# the output is complete when 6 polls in a row (3 s) return nothing
_QUIET_POLLS = 6
_TIMEOUT_S = 600


def say(message: str) -> None:
    print(message, flush=True)  # noqa: T201 - the demo's output is for people


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def _committed(admin_config: dict[str, Any], group: str, topic: str, partitions: int) -> int:
    consumer = Consumer({**admin_config, "group.id": group})
    try:
        offsets = consumer.committed(
            [TopicPartition(topic, p) for p in range(partitions)], timeout=10
        )
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in offsets)


def _lag(config: dict[str, Any], group: str, topic: str, partitions: int) -> int:
    """Records the group has yet to commit: last stable offset minus committed, summed."""
    consumer = Consumer({**config, "group.id": group, "isolation.level": "read_committed"})
    try:
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        committed = consumer.committed(parts, timeout=10)
        total = 0
        for tp in committed:
            _low, stable = consumer.get_watermark_offsets(tp, timeout=10)
            total += max(0, stable - max(tp.offset, 0))
    finally:
        consumer.close()
    return total


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
    report = ensure_topics(pipeline)
    say(f"topics: created {', '.join(report.created)}")


def _produce(config: dict[str, Any], count: int, rate: float) -> None:
    producer = Producer({**config, "enable.idempotence": True, "linger.ms": 20})
    rng = random.Random(7)  # noqa: S311 - demo data, not security
    began = time.monotonic()
    for n in range(count):
        ahead = n / rate - (time.monotonic() - began)
        if ahead > 0:
            time.sleep(ahead)  # a steady stream, so that the fault lands while orders flow
        order = RawOrder(
            order_id=f"o-{n:07d}",
            customer_id=f"c-{rng.randrange(500):03d}",
            sku=f"sku-{rng.randrange(50):02d}",
            quantity=rng.randrange(1, 5),
            unit_price_cents=rng.randrange(100, 10_000),
            placed_at=datetime.now(UTC),
        )
        while True:
            try:
                producer.produce(RAW, order.model_dump_json().encode(), key=order.order_id)
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(60)


def _verify(config: dict[str, Any], count: int, partitions: int) -> tuple[int, int, int]:
    """(unique orders read, duplicates, lost) from a read_committed reader of the output."""
    import json  # noqa: PLC0415

    consumer = Consumer(
        {
            **config,
            "group.id": f"demo-verify-{time.time_ns()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(PRICED, p, 0) for p in range(partitions)])
    seen: Counter[str] = Counter()
    quiet = 0
    while quiet < _QUIET_POLLS:
        batch = consumer.consume(2000, timeout=0.5)
        quiet = 0 if batch else quiet + 1
        for message in batch:
            seen[json.loads(message.value() or b"{}")["order_id"]] += 1
    consumer.close()
    duplicates = sum(n - 1 for n in seen.values() if n > 1)
    expected = {f"o-{n:07d}" for n in range(count)}
    lost = len(expected - set(seen))
    return len(seen), duplicates, lost


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - a linear script, read top down
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=1000, help="orders written per second")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per stage")
    parser.add_argument("--no-faults", action="store_true", help="do not kill a worker")
    parser.add_argument("--keep-running", action="store_true", help="leave the stack up")
    args = parser.parse_args(argv)

    stack = LocalStack()
    started_stack = not stack.status().running
    if started_stack:
        say("starting the local stack (the first run downloads Kafka and the registry)...")
        stack.up(progress=lambda m: say(f"  {m}"))
    kafka = KafkaSettings(bootstrap_servers=LocalStackSettings().bootstrap_servers)
    config: dict[str, Any] = kafka.client_config()
    os.environ["STREAMS_BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
    partitions = pipeline.default_partitions

    _reset_topics(config)
    log_path = LocalStackSettings().home / "logs" / "demo-workers.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
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
            env={**os.environ, "STREAMS_STAGE_SESSION_TIMEOUT_MS": "6000"},
        )
    say(f"workers: {args.workers} per stage, supervisor pid {supervisor.pid}, log {log_path}")
    feeder = threading.Thread(target=_produce, args=(config, args.orders, args.rate))
    feeder.start()
    say(f"writing {args.orders} orders to {RAW} at {args.rate:,.0f}/s")

    killed = False
    exit_code = 1
    try:
        while True:
            validated = _committed(config, "hello.validate", RAW, partitions)
            priced_lag = _lag(config, "hello.price", "hello.orders.placed", partitions)
            say(
                f"  {time.monotonic() - began:6.1f} s  validate {validated:>7}/{args.orders}"
                f"  price lag {priced_lag:>6}"
            )
            if not killed and not args.no_faults and validated > args.orders * 0.3:
                workers = _children(supervisor.pid)
                if workers:
                    victim = workers[-1]
                    os.kill(victim, signal.SIGKILL)
                    killed = True
                    say(
                        f"  FAULT: SIGKILL worker pid {victim} mid-transaction "
                        "(the supervisor restarts it)"
                    )
            if validated >= args.orders and priced_lag == 0:
                break
            if supervisor.poll() is not None:
                say(f"supervisor exited early with {supervisor.returncode}; see {log_path}")
                return 1
            if time.monotonic() - began > _TIMEOUT_S:
                say(f"timed out after {_TIMEOUT_S} s")
                return 1
            time.sleep(2)
        feeder.join()
        elapsed = time.monotonic() - began
        unique, duplicates, lost = _verify(config, args.orders, partitions)
        restarts = log_path.read_text(errors="replace").count("worker ended; restarting")
        say("")
        say("summary")
        say(f"  orders in:                {args.orders}")
        say(f"  orders out (read_committed): {unique}")
        say(f"  duplicates:               {duplicates}")
        say(f"  lost:                     {lost}")
        say(f"  worker restarts:          {restarts}")
        say(
            f"  elapsed:                  {elapsed:.1f} s ({args.orders / elapsed:,.0f} orders/s "
            "through both stages)"
        )
        ok = duplicates == 0 and lost == 0 and unique == args.orders
        say("  result:                   " + ("OK: exactly once" if ok else "FAILED"))
        exit_code = 0 if ok else 3
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(timeout=90)
        if started_stack and not args.keep_running:
            stack.down()
            say("local stack stopped (use --keep-running to leave it up)")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
