"""A schema registry outage is a transient fault: workers wait for it, and keep working.

The regression: a worker that started while the registry was unreachable exited 5 ("cannot
start"), which the supervisor never restarts, so the slot stayed dead; and a record whose writer
schema was not cached went to the DLQ as "deserialization" although nothing was wrong with it.
The registry is cut with a TCP proxy in front of the real one (tests/faults.py), which keeps
running for the other tests.
"""

from __future__ import annotations

import io
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import fastavro
import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from streams import headers as h
from streams.config import KafkaSettings, StageSettings
from streams.kafka.messages import message_headers
from streams.serde import AvroSerde, load_schema
from streams.stage import StageRunner
from tests.faults import TcpProxy
from tests.integration.conftest import Cluster, PipelineTopics
from tests.integration.eos import read_topic
from tests.integration.registry_pipelines import Order, build, write_schema

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _proxy(cluster: Cluster) -> tuple[TcpProxy, str]:
    """A proxy in front of the session's registry, and the registry URL through it."""
    url = urlsplit(cluster.schema_registry_url)
    proxy = TcpProxy(url.hostname or "127.0.0.1", url.port or 80)
    return proxy, f"http://127.0.0.1:{proxy.port}{url.path}"


def _orders(cluster: Cluster, schema_path: Path, topic: str, count: int) -> None:
    with SchemaRegistryClient({"url": cluster.schema_registry_url}) as registry:
        serde = AvroSerde(Order, load_schema(schema_path), registry)
        producer = Producer(cluster.client_config())
        for n in range(count):
            value = serde.serialize(Order(order_id=f"o{n}", n=n), topic=topic)
            producer.produce(topic, value, key=f"o{n}".encode())
        assert producer.flush(30) == 0


def _wait(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_worker_started_while_the_registry_is_down_waits_for_it_and_then_works(
    cluster: Cluster, pipeline_topics: PipelineTopics, tmp_path: Path
) -> None:
    name = f"regwait{uuid.uuid4().hex[:6]}"
    source, sink = f"{name}.in", f"{name}.out"
    schemas = tmp_path / "schemas"
    schema_path = write_schema(schemas, f"t{uuid.uuid4().hex[:8]}")
    pipeline_topics(build(name, source, sink))
    _orders(cluster, schema_path, source, 10)
    proxy, url = _proxy(cluster)  # down: nothing listens on its port yet
    log = tmp_path / "worker.log"
    env = {
        **os.environ,
        "TEST_PIPELINE": name,
        "TEST_INPUT": source,
        "TEST_OUTPUT": sink,
        "STREAMS_SCHEMAS_DIR": str(schemas),
        "STREAMS_SCHEMA_REGISTRY_URL": url,
        "STREAMS_STAGE_STATS_INTERVAL_S": "60",
    }
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams.runtime.worker",
                "tests.integration.registry_pipelines:pipeline",
                "--stage",
                "count",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait(lambda: log.read_text().count("waiting for the schema registry") >= 2, 60, "waits")
        assert worker.poll() is None, f"the worker exited {worker.returncode}: {log.read_text()}"
        assert "cannot start" not in log.read_text()
        proxy.up()
        _wait(
            lambda: len(read_topic(cluster.client_config(), sink, 1, idle_polls=2)) == 10,
            60,
            "the ten records once the registry answers",
        )
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, log.read_text()[-2000:]
    finally:
        if worker.poll() is None:
            worker.kill()
        proxy.down()
    values = sorted(m.value() for m in read_topic(cluster.client_config(), sink, 1))
    assert values == sorted(f"o{n}:{n}".encode() for n in range(10))


def test_a_running_worker_keeps_processing_cached_schemas_and_retries_the_others(
    cluster: Cluster,
    pipeline_topics: PipelineTopics,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While the registry is down: records of the cached schema flow; a record written with a
    new (compatible) schema version waits in the retry topics, not the DLQ; once the registry
    is back it is processed, once."""
    name = f"regrun{uuid.uuid4().hex[:6]}"
    source, sink = f"{name}.in", f"{name}.out"
    schemas = tmp_path / "schemas"
    namespace = f"t{uuid.uuid4().hex[:8]}"
    v1 = write_schema(schemas, namespace)
    v2 = write_schema(tmp_path / "v2", namespace, version=2)
    monkeypatch.setenv("STREAMS_SCHEMAS_DIR", str(schemas))
    pipeline = build(name, source, sink)
    pipeline_topics(pipeline)
    proxy, url = _proxy(cluster)
    proxy.up()
    runner = StageRunner(
        pipeline.get("count"),
        kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers, schema_registry_url=url),
        settings=StageSettings(stats_interval_s=60),
    )  # v1 is registered and cached here, through the proxy
    proxy.down()
    thread = threading.Thread(target=runner.run, kwargs={"idle_timeout_s": 12})
    thread.start()
    try:
        _orders(cluster, v1, source, 5)  # the cached schema: flows while the registry is down
        _wait(
            lambda: len(read_topic(cluster.client_config(), sink, 1, idle_polls=2)) == 5,
            30,
            "the cached-schema records",
        )
        with SchemaRegistryClient({"url": cluster.schema_registry_url}) as registry:
            schema = load_schema(v2)
            v2_id = registry.register_schema(schema.subject, Schema(schema.text, "AVRO"))
        body = io.BytesIO()
        body.write(struct.pack(">bI", 0, v2_id))
        fastavro.schemaless_writer(
            body,
            fastavro.parse_schema(schema.parsed),
            {"order_id": "new", "n": 99, "channel": "app"},
        )
        producer = Producer(cluster.client_config())
        producer.produce(source, body.getvalue(), key=b"new")
        producer.flush(30)
        retry_topic = pipeline.get("count").retry_topics[0]
        _wait(
            lambda: read_topic(cluster.client_config(), retry_topic, 1, idle_polls=2),
            30,
            "the new-schema record in the retry topic",
        )
        assert read_topic(cluster.client_config(), pipeline.get("count").dlq_topic, 1) == []
        time.sleep(3)  # the outage goes on: it retries, and waits again
        proxy.up()
        thread.join(timeout=120)
    finally:
        proxy.up()
        runner.request_stop()
        thread.join(timeout=60)
        proxy.down()
    values = sorted(m.value() for m in read_topic(cluster.client_config(), sink, 1))
    assert values == sorted([*(f"o{n}:{n}".encode() for n in range(5)), b"new:99"])
    assert read_topic(cluster.client_config(), pipeline.get("count").dlq_topic, 1) == []
    (first,) = [
        m
        for m in read_topic(cluster.client_config(), retry_topic, 1)
        if h.get(message_headers(m), h.ATTEMPT) == b"1"
    ]
    found = message_headers(first)
    assert h.get(found, h.ERROR_REASON) == b"retry"
    assert h.get(found, h.ERROR_CLASS) == b"streams.exceptions.RegistryUnavailableError"
