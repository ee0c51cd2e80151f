"""A stage worker's memory and CPU under load: the figures behind the generated resource requests.

Runs the orders pipeline's ``validate`` stage (JSON -> pydantic -> Avro through the schema
registry, exactly once) as `streams run ... --stage validate` (a supervisor and one worker
process, as in one pod), on fresh topics of 4 partitions, in three phases:

* ``idle``: started and joined, no input, for ``--idle-s`` seconds;
* ``paced``: ``--rate`` records per second for ``--paced-s`` seconds;
* ``drain``: ``--records`` records produced at once, drained as fast as the worker can (the
  window runs from the first record produced to the last one committed).

Every 0.2 s it samples VmRSS, VmHWM and user+system CPU time of both processes from /proc
(``bench.measure``). It writes ``bench/results/worker_footprint-<UTC>.json`` with, per phase,
the peak RSS of each process and of the pair, and the CPU cores used (CPU seconds / wall
seconds). ``streams.deploy.resources`` takes its requests from that file.

    python -m bench.worker_footprint [--records 200000] [--rate 500] [--paced-s 30]

It needs the broker at 127.0.0.1:19092 and the registry at
http://127.0.0.1:18081/apis/ccompat/v7 (``--bootstrap``, ``--schema-registry``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from bench.measure import Sample, first_child, sample_process
from streams import Pipeline, codecs
from streams.config import KafkaSettings
from streams.examples.orders import PLACED_SCHEMA, OrderPlaced, RawOrder, validate
from streams.topics import ensure_topics

RESULTS = Path(__file__).resolve().parent / "results"
_SAMPLE_EVERY_S = 0.2
_PARTITIONS = 4

# `streams run bench.worker_footprint:pipeline` in the child builds the same pipeline
_NAME = os.environ.get("FOOTPRINT_PIPELINE", "footprint")
pipeline = Pipeline(_NAME, partitions=_PARTITIONS)
pipeline.stage(
    "validate",
    inputs=[f"{_NAME}.raw"],
    input=codecs.json(RawOrder),
    outputs={f"{_NAME}.placed": codecs.avro(OrderPlaced, PLACED_SCHEMA)},
)(validate)


@dataclass
class Series:
    """Samples of one process."""

    pid: int
    samples: list[Sample] = field(default_factory=list)


def _order(index: int) -> bytes:
    return json.dumps(
        {
            "order_id": f"o-{index}",
            "customer_id": f"c-{index % 97}",
            "sku": f"sku-{index % 1000:03d}",
            "quantity": 1 + index % 9,
            "placed_at": "2026-12-01T12:00:00+00:00",
        }
    ).encode()


def _sample(series: list[Series], until: float) -> None:
    while time.monotonic() < until:
        now = time.monotonic()
        for one in series:
            got = sample_process(one.pid, now)
            if got is not None:
                one.samples.append(got)
        time.sleep(_SAMPLE_EVERY_S)


def _committed(admin_config: dict[str, Any], group: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition  # noqa: PLC0415

    consumer = Consumer({**admin_config, "group.id": group, "enable.auto.commit": False})
    try:
        offsets = consumer.committed(
            [TopicPartition(topic, p) for p in range(_PARTITIONS)], timeout=10
        )
        return sum(max(tp.offset, 0) for tp in offsets)
    finally:
        consumer.close()


def _phase(series: list[Series], start: float, end: float) -> dict[str, Any]:
    summary: dict[str, Any] = {"seconds": round(end - start, 2)}
    total_peak = 0
    for role, one in zip(("supervisor", "worker"), series, strict=True):
        window = [s for s in one.samples if start <= s.t <= end]
        if len(window) < 2:
            continue
        cores = (window[-1].cpu_s - window[0].cpu_s) / (window[-1].t - window[0].t)
        peak = max(s.rss_kib for s in window)
        total_peak += peak
        summary[role] = {"peak_rss_mib": round(peak / 1024, 1), "cpu_cores": round(cores, 3)}
    summary["pod_peak_rss_mib"] = round(total_peak / 1024, 1)
    return summary


def main() -> None:  # noqa: C901, PLR0912, PLR0915 - one measurement, step by step
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--schema-registry", default="http://127.0.0.1:18081/apis/ccompat/v7")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--paced-s", type=float, default=30.0)
    parser.add_argument("--idle-s", type=float, default=10.0)
    args = parser.parse_args()

    name = f"footprint{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "FOOTPRINT_PIPELINE": name,
        "STREAMS_BOOTSTRAP_SERVERS": args.bootstrap,
        "STREAMS_SCHEMA_REGISTRY_URL": args.schema_registry,
    }
    os.environ["FOOTPRINT_PIPELINE"] = name
    built = Pipeline(name, partitions=_PARTITIONS)
    built.stage(
        "validate",
        inputs=[f"{name}.raw"],
        input=codecs.json(RawOrder),
        outputs={f"{name}.placed": codecs.avro(OrderPlaced, PLACED_SCHEMA)},
    )(validate)
    kafka = KafkaSettings(bootstrap_servers=args.bootstrap)
    ensure_topics(built, kafka=kafka)
    topics = [spec.name for spec in built.topic_specs()]
    source = f"{name}.raw"
    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 5})
    streams_bin = str(Path(sys.executable).with_name("streams"))
    command = [streams_bin, "run", "bench.worker_footprint:pipeline", "--stage", "validate"]
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    phases: dict[str, Any] = {}
    produced = 0
    try:
        deadline = time.monotonic() + 60
        worker = first_child(child.pid, timeout_s=60)
        series = [Series(child.pid), Series(worker)]
        # warm-up: one record through, so the worker has joined and fetched the schema
        producer.produce(source, _order(produced))
        produced += 1
        producer.flush(10)
        group = f"{name}.validate"
        while _committed(kafka.client_config(), group, source) < produced:
            if time.monotonic() > deadline:
                raise SystemExit("the worker did not process its first record within 60 s")
            time.sleep(0.5)

        start = time.monotonic()
        _sample(series, start + args.idle_s)
        phases["idle"] = _phase(series, start, time.monotonic())

        start = time.monotonic()
        end = start + args.paced_s
        next_at = start
        while time.monotonic() < end:
            batch = max(1, args.rate // 10)
            for _ in range(batch):
                producer.produce(source, _order(produced))
                produced += 1
            producer.poll(0)
            next_at += batch / args.rate
            while time.monotonic() < next_at:
                for one in series:
                    got = sample_process(one.pid, time.monotonic())
                    if got is not None:
                        one.samples.append(got)
                time.sleep(min(_SAMPLE_EVERY_S, max(0.0, next_at - time.monotonic())))
        producer.flush(30)
        phases["paced"] = _phase(series, start, time.monotonic()) | {"rate_per_s": args.rate}

        # the window starts before the first record: the worker drains while they arrive
        start = time.monotonic()
        for index in range(args.records):
            producer.produce(source, _order(produced))
            produced += 1
            producer.poll(0)
            if index % 1000 == 0:
                for one in series:
                    got = sample_process(one.pid, time.monotonic())
                    if got is not None:
                        one.samples.append(got)
        producer.flush(60)
        while _committed(kafka.client_config(), group, source) < produced:
            _sample(series, time.monotonic() + 1.0)
            if time.monotonic() - start > 600:
                raise SystemExit("the drain did not finish within 10 minutes")
        elapsed = time.monotonic() - start
        phases["drain"] = _phase(series, start, time.monotonic()) | {
            "records": args.records,
            "records_per_s": round(args.records / elapsed),
        }
        hwm = {
            role: round(max(s.hwm_kib for s in one.samples) / 1024, 1)
            for role, one in zip(("supervisor", "worker"), series, strict=True)
        }
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
        admin = AdminClient({"bootstrap.servers": args.bootstrap})
        for future in admin.delete_topics([*topics], operation_timeout=30).values():
            future.result(timeout=30)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    result = {
        "benchmark": "worker_footprint",
        "command": " ".join(["python -m bench.worker_footprint", *sys.argv[1:]]),
        "stage": "orders validate (JSON -> pydantic -> Avro, exactly once), 4 partitions",
        "processes": "streams run: one supervisor and one worker process (one pod)",
        "phases": phases,
        "high_water_rss_mib": hwm,
        "records_produced": produced,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_avg_at_end": os.getloadavg(),
        },
        "finished_at": stamp,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"worker_footprint-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
