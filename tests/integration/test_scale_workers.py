"""Scaling 1 -> 4 -> 1 workers driven by ``/api/scale`` under load, scale-in by SIGTERM.

The test plays the autoscaler (KEDA's metrics-api trigger with ``targetValue: "1"`` and
``maxReplicaCount: 4``, without its stabilisation windows): every second it reads
``suggested_replicas`` and starts or SIGTERMs worker processes (``--slot N``, the highest
slots first). Numbered records are fed at a steady rate; a burst makes one worker fall behind.
At the end every input record is in the output exactly once and in key order (the input as
the broker holds it: a fed record absent from the input topic is reported, not blamed on the
stage), every stopped worker exited 0 and none was fenced. A 503 from the monitor (its sample
can time out on a loaded machine) holds the replicas, as KEDA does. The seconds each partition
had no owner after each scale event (consumer group descriptions every 100 ms), and the longest
time each partition's commit did not move, go to tests/chaos/results/scale-workers-*.json.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from streams.config import KafkaSettings
from streams.observability.server import Monitor
from streams.topics import ensure_topics
from tests.chaos.harness import write_result
from tests.integration.conftest import Cluster
from tests.integration.eos import read_committed, read_topic
from tests.integration.pipelines import build_copy
from tests.integration.scaling import (
    Feeder,
    OwnershipWatch,
    ScaleEvent,
    WorkerPool,
    stalled_per_event,
    unowned_per_event,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 8
MAX_REPLICAS = 4
RATE = 100  # records/s, steady
BURST = 8000
PER_REPLICA = 1000
DELAY_MS = "2"  # per record: one worker copies at most ~500 records/s


def _scale(url: str) -> dict[str, Any]:
    """The signal; a 503 (the monitor's last sample failed) comes back with its ``error``."""
    try:
        with urllib.request.urlopen(url, timeout=15) as response:  # noqa: S310 - loopback URL
            answer: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as error:
        if error.code != 503:
            raise
        answer = {"status": 503, **json.loads(error.read())}
    return answer


def _autoscale(
    url: str, pool: WorkerPool, feeder: Feeder, watch: OwnershipWatch
) -> tuple[list[ScaleEvent], list[dict[str, Any]]]:
    """Play the autoscaler until the pool went 1 -> MAX_REPLICAS -> 1; the events and signals."""
    events: list[ScaleEvent] = []
    signals: list[dict[str, Any]] = []
    began = time.monotonic()
    burst_at: float | None = None
    peak = 1
    while True:
        elapsed = time.monotonic() - began
        assert elapsed < 240, f"no 1 -> {MAX_REPLICAS} -> 1 within 240 s: {signals[-3:]}"
        assert not pool.crashed(), pool.crashed()
        answer = _scale(url)
        signals.append({"t": round(elapsed, 1), **answer})
        if "error" in answer:  # as KEDA does: keep the replicas until the monitor answers
            time.sleep(1.0)
            continue
        if burst_at is None and watch.all_owned_since(began) and elapsed > 5:
            feeder.burst(BURST)  # one worker falls behind
            burst_at = elapsed
        wanted = min(answer["suggested_replicas"], MAX_REPLICAS)
        if wanted != len(pool.running):
            events.append(ScaleEvent(time.monotonic(), len(pool.running), wanted))
            pool.scale_to(wanted)
            peak = max(peak, wanted)
        if peak == MAX_REPLICAS and len(pool.running) == 1 and answer["lag"] < PER_REPLICA:
            return events, signals
        time.sleep(1.0)


def test_scaling_one_four_one_driven_by_the_signal_keeps_exactly_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    name = f"scalew{uuid.uuid4().hex[:8]}"
    source, sink = f"{name}.in", f"{name}.out"
    pipeline = build_copy(name, source, sink, partitions=PARTITIONS)
    kafka = KafkaSettings(bootstrap_servers=cluster.bootstrap_servers)
    ensure_topics(pipeline, kafka=kafka)
    group = pipeline.component("copy").group_id
    env = {
        "TEST_PIPELINE": name,
        "TEST_INPUT": source,
        "TEST_OUTPUT": sink,
        "TEST_DELAY_MS": DELAY_MS,
        "STREAMS_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
        "STREAMS_STAGE_SESSION_TIMEOUT_MS": "10000",
    }
    pool = WorkerPool(env, tmp_path)
    feeder = Feeder(kafka.client_config(), source, RATE)
    watch = OwnershipWatch(kafka.client_config(), group, source, PARTITIONS)
    monitor = Monitor([pipeline], kafka=kafka, interval_s=1.0, records_per_replica=PER_REPLICA)
    try:
        pool.scale_to(1)
        feeder.start()
        watch.start()
        monitor.start("127.0.0.1", 0)
        events, signals = _autoscale(f"{monitor.url}/api/scale/{group}", pool, feeder, watch)
        time.sleep(5)  # the last worker alone under the steady load
        fed_until = time.monotonic()
        feeder.stop.set()
        feeder.join(120)
        fed = feeder.fed
        # the expected output is the input as the broker holds it (see absent_from_input)
        inputs = sorted(
            int(m.value()) for m in read_topic(kafka.client_config(), source, PARTITIONS)
        )
        result = read_committed(cluster, sink, PARTITIONS, expect=len(inputs), timeout_s=240)
    finally:
        feeder.stop.set()
        watch.stop.set()
        monitor.close()
        pool.close()
        for future in watch.admin.delete_topics([t.name for t in pipeline.topic_specs()]).values():
            future.result(timeout=60)
    watch.join(5)
    unowned = unowned_per_event(watch.samples, events, PARTITIONS, fed_until)
    stalled = stalled_per_event(watch.commits, events, PARTITIONS, fed_until)
    write_result(
        "scale-workers",
        {
            "partitions": PARTITIONS,
            "rate": RATE,
            "burst": BURST,
            "records_per_replica": PER_REPLICA,
            "handler_delay_ms": float(DELAY_MS),
            "fed": fed,
            "input_records": len(inputs),
            "absent_from_input": sorted(set(range(fed)) - set(inputs))[:10],
            "feeder_delivery_errors": feeder.errors[:10],
            "read": len(result.values),
            "scale_events": [{**u, **s} for u, s in zip(unowned, stalled, strict=True)],
            "worker_exits": pool.exits,
            "signals_failed": sum(1 for s in signals if "error" in s),
            "signals": signals,
        },
    )
    assert not feeder.errors, f"records not delivered to the input: {feeder.errors[:5]}"
    assert len(set(inputs)) == len(inputs), "the feeder wrote a value twice"
    output = sorted(result.values)
    duplicated = sorted(v for v, n in Counter(output).items() if n > 1)
    assert not duplicated, f"{len(duplicated)} duplicated, first {duplicated[:10]}"
    lost = sorted(set(inputs) - set(output))
    assert not lost, f"{len(lost)} lost, first {lost[:10]}"
    assert output == inputs, "values in the output that are no input"
    for key, values in result.by_key.items():
        assert values == sorted(values), f"key {key} out of order"
    assert events[0].before == 1, events
    assert max(e.after for e in events) == MAX_REPLICAS, events
    assert events[-1].after == 1, events
    assert all(code == 0 for _, code in pool.exits), pool.exits
    text = pool.log_text()
    assert "fenced by another worker" not in text
