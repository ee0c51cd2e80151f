"""A dependency outage: the upstream stage never waits, the downstream one parks and recovers.

The pricing service is a real HTTP server on loopback behind a TCP proxy that counts every
connection attempt. Both stages run as worker processes under `streams run --all`; the service
goes down while they run (the proxy accepts and closes each connection: the callers see a dead
service, and the test sees how often they tried).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams.examples.pricing_service import PricingService
from tests.faults import TcpProxy
from tests.integration.conftest import Cluster, PipelineTopics, TopicFactory
from tests.integration.eos import produce_numbered
from tests.integration.outage_pipelines import build

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
COUNT = 2000


def _committed(cluster: Cluster, group: str, topic: str, partitions: int = 2) -> int:
    consumer = Consumer(cluster.client_config(**{"group.id": group}))
    try:
        offsets = consumer.committed(
            [TopicPartition(topic, p) for p in range(partitions)], timeout=10
        )
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in offsets)


def _values(cluster: Cluster, topic: str, partitions: int = 2) -> list[bytes]:
    consumer = Consumer(
        cluster.client_config(
            **{"group.id": f"v-{uuid.uuid4().hex}", "isolation.level": "read_committed"}
        )
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    values: list[bytes] = []
    idle = 0
    while idle < 6:
        batch = consumer.consume(1000, timeout=0.5)
        idle = 0 if batch else idle + 1
        values.extend(m.value() or b"" for m in batch if m.error() is None)
    consumer.close()
    return values


def _wait(predicate: object, timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:]
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def test_upstream_finishes_while_the_dependency_is_down_and_all_complete_after(
    cluster: Cluster, topic_factory: TopicFactory, pipeline_topics: PipelineTopics, tmp_path: Path
) -> None:
    source, mid = topic_factory("in", partitions=2), topic_factory("mid", partitions=2)
    sink = topic_factory("out", partitions=2)
    name = f"outage{uuid.uuid4().hex[:8]}"
    pipeline = build(name, source, mid, sink)
    pipeline_topics(pipeline)
    enrich = pipeline.get("enrich")
    service = PricingService().start()
    proxy = TcpProxy("127.0.0.1", service.port)
    proxy.up()
    produce_numbered(cluster, source, 200)  # priced while the service runs
    log = tmp_path / "workers.log"
    env = {
        **os.environ,
        "TEST_PIPELINE": name,
        "TEST_INPUT": source,
        "TEST_MID": mid,
        "TEST_OUTPUT": sink,
        "PRICING_URL": f"http://127.0.0.1:{proxy.port}",
        "STREAMS_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
        "STREAMS_STAGE_SESSION_TIMEOUT_MS": "6000",
    }
    with log.open("wb") as out:
        supervisor = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams.cli.main",
                "run",
                "tests.integration.outage_pipelines:pipeline",
                "--all",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # 0. both stages running, the service answering
        _wait(lambda: len(_values(cluster, sink)) >= 200, 90, "the first records priced", log)
        # 1. the service goes down while the stages run; the rest of the input arrives
        service.set_mode("down")
        proxy.attempts = 0
        produce_numbered(cluster, source, COUNT - 200, first=200)
        # the upstream stage still processes all of its input
        _wait(
            lambda: _committed(cluster, f"{name}.ingest", source) >= COUNT,
            90,
            "ingest to finish during the outage",
            log,
        )
        # 2. the downstream stage keeps consuming and parks records in its retry topics
        _wait(
            lambda: _committed(cluster, f"{name}.enrich", mid) >= COUNT,
            90,
            "enrich to park every record",
            log,
        )
        # consumed and committed, yet neither written nor dead-lettered: all 1,800 are parked
        # in the retry topics (the transaction commits the route with the offsets)
        assert _values(cluster, enrich.dlq_topic) == []
        text = log.read_text(errors="replace")
        assert "circuit breaker closed -> open" in text, "the breaker opened"
        tried = proxy.attempts
        # the breaker keeps the calls to a few: 3 failures open it, then one probe per 2 s
        assert 3 <= tried < (COUNT - 200) // 10, f"{tried} calls reached the dead service"
        assert len(_values(cluster, sink)) == 200
        # 3. recovery: every record completes, exactly once
        service.set_mode("ok")
        _wait(lambda: len(_values(cluster, sink)) >= COUNT, 180, "recovery", log)
        assert "circuit breaker half_open -> closed" in log.read_text(errors="replace")
    finally:
        supervisor.send_signal(signal.SIGTERM)
        code = supervisor.wait(timeout=90)
        proxy.down()
        service.stop()
    assert code == 0, log.read_text(errors="replace")[-3000:]
    outputs = Counter(v.split(b":")[0] for v in _values(cluster, sink))
    assert not [v for v, n in outputs.items() if n > 1], "duplicates"
    assert set(outputs) == {str(n).encode() for n in range(COUNT)}, "lost records"
    assert _values(cluster, enrich.dlq_topic) == []
    stats = service.stats()
    assert stats["unique_keys"] == COUNT, "each record priced under its own idempotency key"
