"""Scaling one stage on 8 partitions: throughput of 1, 2, 4, 8 workers; seconds unowned per event.

The stage is the integration tests' copy stage (``tests.integration.pipelines``) run as worker
processes (``python -m streams.runtime.worker --slot N``), its handler waiting ``--delay-ms``
per record (default 1 ms: a stage that calls a service; with 0 the stage is CPU-bound and this
machine's cores, not the workers, set the figure).

**Throughput.** For each worker count, a fresh pipeline (topics of 8 partitions): the workers
start, and once the group is Stable with every partition assigned, ``--records`` numbered
records are produced at once. The window runs from the first record produced to the moment the
group's committed offsets on the input sum to ``--records`` (polled every 50 ms). Figures:
total records/s, per worker (total / workers), and the ratio to 1 worker of the same run.

**Scale events.** Under a steady feed (``--rate``), one pool goes 1 -> 2 -> 4 -> 8 -> 4 -> 2 ->
1 workers (scale-in: SIGTERM, highest slots first), holding each step ``--hold-s``. Per event,
from consumer group descriptions every 100 ms: the seconds each partition had no owner
(``unowned_s``); from the committed offsets at the same samples: the longest time each
partition's commit did not move (``stalled_s``). Run once with dynamic membership and once with
static membership (``STREAMS_STAGE_STATIC_MEMBERSHIP=true``: a SIGTERMed static member does not
leave the group, so its partitions wait for the session timeout, 10 s here).

Writes ``bench/results/scale-<UTC timestamp>.json``; the topics are deleted at the end.

    PYTHONPATH=. .venv/bin/python -m bench.scale [--records 20000] [--delay-ms 1]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from streams.config import KafkaSettings
from streams.topics import ensure_topics
from tests.integration.pipelines import build_copy
from tests.integration.scaling import (
    Feeder,
    OwnershipWatch,
    ScaleEvent,
    WorkerPool,
    stalled_per_event,
    unowned_per_event,
)

RESULTS = Path(__file__).resolve().parent / "results"
PARTITIONS = 8
COUNTS = (1, 2, 4, 8)
STEPS = (1, 2, 4, 8, 4, 2, 1)


def _env(name: str, bootstrap: str, delay_ms: float, *, static: bool) -> dict[str, str]:
    return {
        "TEST_PIPELINE": name,
        "TEST_INPUT": f"{name}.in",
        "TEST_OUTPUT": f"{name}.out",
        "TEST_DELAY_MS": str(delay_ms),
        "STREAMS_BOOTSTRAP_SERVERS": bootstrap,
        "STREAMS_STAGE_SESSION_TIMEOUT_MS": "10000",
        "STREAMS_STAGE_STATIC_MEMBERSHIP": "true" if static else "false",
    }


def _new_stage(kafka: KafkaSettings, run: str, label: str) -> tuple[str, str, list[str]]:
    name = f"benchscale{run}{label}"
    pipeline = build_copy(name, f"{name}.in", f"{name}.out", partitions=PARTITIONS)
    ensure_topics(pipeline, kafka=kafka)
    return name, pipeline.component("copy").group_id, [s.name for s in pipeline.topic_specs()]


def _wait_assigned(watch: OwnershipWatch, members: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        description = watch.admin.describe_consumer_groups([watch.group])[watch.group].result(5)
        if len(description.members or ()) == members and len(watch.owned()) == PARTITIONS:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{members} workers did not get every partition within {timeout_s} s")


def _throughput(
    kafka: KafkaSettings, run: str, workers: int, args: argparse.Namespace, work: Path
) -> tuple[dict[str, Any], list[str]]:
    records, delay_ms = args.records, args.delay_ms
    name, group, topics = _new_stage(kafka, run, f"t{workers}")
    config = kafka.client_config()
    logs = work / f"throughput-{workers}"
    logs.mkdir()
    pool = WorkerPool(_env(name, kafka.bootstrap_servers, delay_ms, static=False), logs)
    watch = OwnershipWatch(config, group, f"{name}.in", PARTITIONS)
    try:
        pool.scale_to(workers)
        _wait_assigned(watch, workers)
        producer = Producer({**config, "enable.idempotence": True, "linger.ms": 5})
        began = time.monotonic()
        for n in range(records):
            while True:
                try:
                    producer.produce(f"{name}.in", str(n).encode(), key=f"k{n % 50}".encode())
                    break
                except BufferError:
                    producer.poll(0.05)
        if producer.flush(60) != 0:
            raise RuntimeError("could not produce every record")
        while sum(watch.committed().values()) < records:
            if time.monotonic() - began > 600:
                raise RuntimeError(f"{workers} workers did not finish within 600 s")
            if pool.crashed():
                raise RuntimeError(f"a worker exited: {pool.crashed()}")
            time.sleep(0.05)
        seconds = time.monotonic() - began
    finally:
        pool.close()
    total = records / seconds
    return {
        "workers": workers,
        "records": records,
        "seconds": round(seconds, 2),
        "total_per_s": round(total),
        "per_worker_per_s": round(total / workers),
    }, topics


def _scale_events(
    kafka: KafkaSettings, run: str, args: argparse.Namespace, work: Path, *, static: bool
) -> tuple[list[dict[str, Any]], list[str]]:
    label = "s" if static else "d"
    name, group, topics = _new_stage(kafka, run, f"e{label}")
    config = kafka.client_config()
    logs = work / f"events-{label}"
    logs.mkdir()
    pool = WorkerPool(_env(name, kafka.bootstrap_servers, args.delay_ms, static=static), logs)
    feeder = Feeder(config, f"{name}.in", args.rate)
    watch = OwnershipWatch(config, group, f"{name}.in", PARTITIONS)
    events: list[ScaleEvent] = []
    try:
        pool.scale_to(STEPS[0])
        _wait_assigned(watch, STEPS[0])
        feeder.start()
        watch.start()
        time.sleep(args.hold_s)
        for before, after in itertools.pairwise(STEPS):
            events.append(ScaleEvent(time.monotonic(), before, after))
            pool.scale_to(after)
            time.sleep(args.hold_s)
            if pool.crashed():
                raise RuntimeError(f"a worker exited: {pool.crashed()}")
        end = time.monotonic()
    finally:
        feeder.stop.set()
        watch.stop.set()
        pool.close()
    watch.join(5)
    unowned = unowned_per_event(watch.samples, events, PARTITIONS, end)
    stalled = stalled_per_event(watch.commits, events, PARTITIONS, end)
    return [{**u, **s} for u, s in zip(unowned, stalled, strict=True)], topics


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--delay-ms", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=200.0, help="steady feed of the events")
    parser.add_argument("--hold-s", type=float, default=15.0, help="seconds at each step")
    args = parser.parse_args()
    kafka = KafkaSettings(bootstrap_servers=args.bootstrap)
    run = uuid.uuid4().hex[:6]
    started = datetime.now(UTC)
    created: list[str] = []
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix=f"streams-bench-scale-{run}-") as tmp:
        work = Path(tmp)
        try:
            rows = []
            for workers in COUNTS:
                row, topics = _throughput(kafka, run, workers, args, work)
                created.extend(topics)
                rows.append(row)
                print(row)
            single = rows[0]["total_per_s"]
            for row in rows:
                row["ratio_to_1"] = round(row["total_per_s"] / single, 2)
            figures["throughput"] = rows
            for static in (False, True):
                events, topics = _scale_events(kafka, run, args, work, static=static)
                created.extend(topics)
                key = "static" if static else "dynamic"
                figures[f"scale_events_{key}"] = events
                figures[f"max_unowned_s_{key}"] = {
                    f"{e['from_workers']}->{e['to_workers']}": e["max_unowned_s"] for e in events
                }
                figures[f"max_stalled_s_{key}"] = {
                    f"{e['from_workers']}->{e['to_workers']}": e["max_stalled_s"] for e in events
                }
                print(key, figures[f"max_unowned_s_{key}"], figures[f"max_stalled_s_{key}"])
        finally:
            admin = AdminClient(kafka.client_config())
            if created:
                for future in admin.delete_topics(sorted(set(created))).values():
                    try:
                        future.result(timeout=60)
                    except Exception as error:  # noqa: BLE001 - already gone: nothing to do
                        print(f"cleanup: {error}")
    payload = {
        "benchmark": "scale",
        "started_utc": started.isoformat(),
        "finished_utc": datetime.now(UTC).isoformat(),
        "bootstrap": args.bootstrap,
        "partitions": PARTITIONS,
        "records": args.records,
        "handler_delay_ms": args.delay_ms,
        "feed_rate_per_s": args.rate,
        "hold_s": args.hold_s,
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        **figures,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"scale-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
