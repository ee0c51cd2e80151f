"""Aggregate stages on the real broker: out-of-order and late records, a retried fold, re-keying.

The restore and takeover tests (worker processes, SIGKILL) are in test_aggregate_restore.py;
the chaos run in tests/chaos/test_aggregate_chaos.py.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streams import headers
from streams.aggregate import AggregateRunner
from streams.config import KafkaSettings, StageSettings, StateSettings
from streams.exceptions import RetryLater
from streams.kafka.messages import message_headers
from streams.pipeline import Pipeline
from streams.record import Record
from streams.retry import RetryPolicy
from streams.spec import AggregateSpec
from streams.windows import Tumbling
from tests.integration.conftest import Cluster, PipelineTopics
from tests.integration.eos import read_topic

pytestmark = pytest.mark.integration

BASE = 1_700_000_000_000  # in the past: brokers refuse timestamps over 1 h ahead


def _spec(pipeline: Pipeline) -> AggregateSpec:
    spec = pipeline.component("sums")
    assert spec.kind == "aggregate"
    return spec


def _runner(cluster: Cluster, pipeline: Pipeline, tmp_path: Path) -> AggregateRunner:
    spec = _spec(pipeline)
    return AggregateRunner(
        spec,
        kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers),
        settings=StageSettings(session_timeout_ms=6000, stats_interval_s=60),
        state=StateSettings(dir=tmp_path / "state"),
    )


def _produce(cluster: Cluster, topic: str, records: list[tuple[str, int, int]]) -> None:
    producer = Producer(cluster.client_config(**{"enable.idempotence": True}))
    failed: list[object] = []
    for key, at, amount in records:
        producer.produce(
            topic,
            str(amount).encode(),
            key=key.encode(),
            timestamp=BASE + at,
            on_delivery=lambda error, _message: failed.append(error) if error else None,
        )
    assert producer.flush(30) == 0
    assert failed == []


def _sum(total: int, record: Record[bytes]) -> int:
    return total + int(record.value)


def test_records_within_grace_fold_and_beyond_it_go_to_the_dlq_as_late(
    cluster: Cluster, pipeline_topics: PipelineTopics, tmp_path: Path
) -> None:
    name = f"agg{uuid.uuid4().hex[:6]}"
    pipeline = Pipeline(name, partitions=1)
    source, sink = f"{name}.in", f"{name}.out"
    pipeline.aggregate(
        "sums", inputs=[source], outputs=[sink], initial=0, window=Tumbling(1, grace_s=0.5)
    )(_sum)
    pipeline_topics(pipeline)
    _produce(
        cluster,
        source,
        [
            ("a", 100, 1),
            ("a", 1200, 2),  # watermark 700
            ("a", 900, 4),  # out of order, within grace: folds into [0, 1000)
            ("b", 1700, 8),  # watermark 1200: [0, 1000) closes, a = 5
            ("a", 800, 16),  # its window has closed: late
            ("a", 3000, 32),  # watermark 2500: [1000, 2000) closes, a = 2, b = 8
        ],
    )
    runner = _runner(cluster, pipeline, tmp_path)
    runner.run(max_records=6, idle_timeout_s=15)
    outputs = [json.loads(m.value()) for m in read_topic(cluster.client_config(), sink, 1)]
    found = sorted((o["key"], o["start_ms"] - BASE, o["value"]) for o in outputs)
    assert found == [("a", 0, 5), ("a", 1000, 2), ("b", 1000, 8)]
    dead = read_topic(cluster.client_config(), _spec(pipeline).dlq_topic, 1)
    assert [(m.value(), headers.get(message_headers(m), headers.ERROR_REASON)) for m in dead] == [
        (b"16", b"late")
    ]
    assert runner.stats.late == 1
    assert runner.stats.windows_closed == 3


def test_a_retried_fold_lands_in_its_window_while_open_and_is_late_once_closed(
    cluster: Cluster, pipeline_topics: PipelineTopics, tmp_path: Path
) -> None:
    name = f"agg{uuid.uuid4().hex[:6]}"
    pipeline = Pipeline(name, partitions=1)
    source, sink = f"{name}.in", f"{name}.out"
    failed: set[bytes] = set()

    def flaky(total: int, record: Record[bytes]) -> int:
        if record.value in {b"4", b"64"} and record.value not in failed:
            failed.add(record.value)
            raise RetryLater("once")
        return total + int(record.value)

    pipeline.aggregate(
        "sums",
        inputs=[source],
        outputs=[sink],
        initial=0,
        window=Tumbling(10, grace_s=5),
        retry=RetryPolicy(tiers=(0.5,), max_attempts=3, jitter=0),
    )(flaky)
    pipeline_topics(pipeline)
    _produce(
        cluster,
        source,
        [
            ("a", 1_000, 1),
            ("a", 2_000, 4),  # fails once; back in 0.5 s, [0, 10 s) still open: folds
            ("a", 3_000, 64),  # fails once; by the time it is back [0, 10 s) has closed
            ("a", 30_000, 2),  # watermark 25 s: [0, 10 s) closes
        ],
    )
    runner = _runner(cluster, pipeline, tmp_path)
    # the 4 is retried before the 30 s record arrives only if the retry is read first: the
    # records above are consumed in one batch, so both retries come back after the close
    runner.run(max_records=6, idle_timeout_s=15)
    outputs = [json.loads(m.value()) for m in read_topic(cluster.client_config(), sink, 1)]
    assert [(o["start_ms"] - BASE, o["value"]) for o in outputs] == [(0, 1)]
    dead = read_topic(cluster.client_config(), _spec(pipeline).dlq_topic, 1)
    reasons = sorted(
        (m.value(), headers.get(message_headers(m), headers.ERROR_REASON)) for m in dead
    )
    assert reasons == [(b"4", b"late"), (b"64", b"late")]
    assert runner.stats.retried == 2


def test_a_key_function_regroups_records_through_the_repartition_topic(
    cluster: Cluster, pipeline_topics: PipelineTopics, tmp_path: Path
) -> None:
    name = f"agg{uuid.uuid4().hex[:6]}"
    pipeline = Pipeline(name, partitions=3)
    source, sink = f"{name}.in", f"{name}.out"
    pipeline.aggregate(
        "sums",
        inputs=[source],
        outputs=[sink],
        initial=0,
        key=lambda record: f"c{int(record.value) % 2}",
        emit="update",
    )(_sum)
    pipeline_topics(pipeline)
    # keyed by order: the records of one customer are spread over every partition
    _produce(cluster, source, [(f"o{n}", n, n) for n in range(1, 61)])
    runner = _runner(cluster, pipeline, tmp_path)
    runner.run(max_records=120, idle_timeout_s=15)
    outputs = [json.loads(m.value()) for m in read_topic(cluster.client_config(), sink, 3)]
    last = {o["key"]: o["value"] for o in outputs}
    assert last == {"c0": sum(range(2, 61, 2)), "c1": sum(range(1, 61, 2))}
    assert len(outputs) == 60  # one update per record, none twice
