"""Time LagMonitor.sample() and a /metrics scrape at 200 groups x 50 partitions, local broker.

Setup: 20 topics x 50 partitions, 20 records per partition; 10 groups per topic, each with a
committed offset on all 50 partitions (200 groups, 10,000 group-partitions). Half the groups are
caught up, half lag behind at varied offsets, so the time-lag reads have real work to do.

The monitor marks groups with the replay ledger's tasks (``ReplayMarks``), as ``streams lag``
and ``streams monitor`` do, so the figures include its ledger read per sample.

Measured:

- ``sample_cold_s``: the first ``sample(groups)``, which reads record timestamps;
- ``sample_warm_s``: five more, which hit the timestamp cache, as a monitor polling unchanged
  commits would (and their median);
- ``sample_all_groups_s``: one ``sample()`` of every group on the broker (ListConsumerGroups
  first);
- ``render_cold_s``: rendering those 10,000 partitions as Prometheus text once (the monitor's
  sampler thread does this after each sample);
- ``scrape_warm_s``: five ``GET /metrics`` of a running ``Monitor`` serving that sample (a
  scrape serves the rendered page; it never renders nor asks Kafka).

Prints the figures, writes them to ``bench/results/lag_snapshot-<UTC timestamp>.json``, then
deletes the groups and topics. (These timings used to be asserted in tests/integration; speed
is a benchmark's business, not a test's.)

    .venv/bin/python -m bench.lag_snapshot [--bootstrap 127.0.0.1:19092]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streams.config import KafkaSettings
from streams.lag import GroupLag, LagMonitor
from streams.observability.exporter import MetricsExporter
from streams.observability.server import Monitor
from streams.replay import ReplayMarks

TOPICS, PARTITIONS, GROUPS_PER_TOPIC, RECORDS = 20, 50, 10, 20
WARM = 5
RESULTS = Path(__file__).resolve().parent / "results"


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def _setup(admin: AdminClient, bootstrap: str, run: str) -> tuple[list[str], list[str]]:
    """The topics, their records and the groups' commits; (topics, groups)."""
    topics = [f"bench-lag-{run}-{n}" for n in range(TOPICS)]
    for future in admin.create_topics(
        [NewTopic(t, num_partitions=PARTITIONS, replication_factor=1) for t in topics]
    ).values():
        future.result(timeout=120)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for topic in topics:
        for partition in range(PARTITIONS):
            for n in range(RECORDS):
                producer.produce(topic, str(n).encode(), partition=partition)
        producer.poll(0)
    if producer.flush(60):
        raise SystemExit("records left unsent")
    rng = random.Random(7)
    groups: list[str] = []
    futures = {}
    for topic in topics:
        for g in range(GROUPS_PER_TOPIC):
            group = f"bench-lag-{run}-{topic[-2:].strip('-')}-{g}"
            groups.append(group)
            offsets = [
                TopicPartition(topic, p, RECORDS if g % 2 == 0 else rng.randrange(0, RECORDS))
                for p in range(PARTITIONS)
            ]
            futures.update(
                admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, offsets)])
            )
    for future in futures.values():
        future.result(timeout=60)
    return topics, groups


def _samples(bootstrap: str, groups: list[str]) -> tuple[dict[str, Any], list[GroupLag]]:
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    with LagMonitor(kafka, replay=ReplayMarks(kafka)) as monitor:
        cold, sampled = _timed(lambda: monitor.sample(groups))
        warm = [_timed(lambda: monitor.sample(groups))[0] for _ in range(WARM)]
        every, _ = _timed(monitor.sample)
    rows = sum(len(g.partitions) for g in sampled)
    read = sum(1 for g in sampled for p in g.partitions if p.lag_seconds_method == "read")
    figures = {
        "partitions": rows,
        "time_lags_read": read,
        "sample_cold_s": round(cold, 3),
        "sample_warm_s": [round(t, 3) for t in warm],
        "sample_warm_median_s": round(statistics.median(warm), 3),
        "sample_all_groups_s": round(every, 3),
    }
    return figures, sampled


def _scrapes(bootstrap: str, sampled: list[GroupLag]) -> dict[str, Any]:
    """Render the sample once, then scrape a Monitor that serves it."""
    monitor = Monitor(kafka=KafkaSettings(bootstrap_servers=bootstrap), interval_s=3600)
    monitor.start("127.0.0.1", 0)  # its own first sample; the sampler then waits an hour
    try:
        base = monitor.snapshot
        assert base is not None  # noqa: S101 - start() takes a sample
        big = replace(base, groups=tuple(sampled), views=(), workers=())
        render, body = _timed(MetricsExporter(lambda: big).render)
        monitor._snapshot = big  # noqa: SLF001 - what the sampler thread does after a sample
        monitor.exporter.render()  # as the sampler thread does, before any scrape

        def scrape() -> bytes:
            with urllib.request.urlopen(monitor.url + "/metrics", timeout=30) as answer:  # noqa: S310
                data: bytes = answer.read()
                return data

        scrapes = [_timed(scrape) for _ in range(WARM)]
        if any(page != body for _, page in scrapes):
            raise SystemExit("a scrape did not serve the rendered sample")
    finally:
        monitor.close()
    return {
        "page_bytes": len(body),
        "render_cold_s": round(render, 3),
        "scrape_warm_s": [round(t, 4) for t, _ in scrapes],
        "scrape_warm_median_s": round(statistics.median(t for t, _ in scrapes), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    args = parser.parse_args()
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    run = uuid.uuid4().hex[:6]
    started = datetime.now(UTC)
    topics: list[str] = [f"bench-lag-{run}-{n}" for n in range(TOPICS)]
    groups: list[str] = []
    try:
        topics, groups = _setup(admin, args.bootstrap, run)
        print(f"{len(groups)} groups x {PARTITIONS} partitions over {TOPICS} topics")
        figures, sampled = _samples(args.bootstrap, groups)
        figures.update(_scrapes(args.bootstrap, sampled))
    finally:
        if groups:
            for future in admin.delete_consumer_groups(groups).values():
                future.result(timeout=60)
        for future in admin.delete_topics(topics).values():
            try:
                future.result(timeout=60)
            except Exception as error:  # noqa: BLE001 - a topic never created: nothing to delete
                print(f"cleanup: {error}")
    for name, value in figures.items():
        print(f"{name}: {value}")
    payload = {
        "benchmark": "lag_snapshot",
        "started_utc": started.isoformat(),
        "finished_utc": datetime.now(UTC).isoformat(),
        "bootstrap": args.bootstrap,
        "groups": len(groups),
        "partitions_per_group": PARTITIONS,
        "topics": TOPICS,
        "records_per_partition": RECORDS,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        **figures,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"lag_snapshot-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
