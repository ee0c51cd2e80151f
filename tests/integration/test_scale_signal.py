"""``GET /api/scale/<group>`` on the real broker: what counts as work, and what does not.

Each case has its control: KEDA's ``kafka`` trigger (lag against the high watermark over every
topic the group committed on, ``ceil(total lag / lagThreshold)``, capped at their partitions),
computed from the same real offsets, would scale out where the signal does not.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams import headers
from streams.config import KafkaSettings
from streams.dependency import Dependency
from streams.exceptions import DependencyUnavailable
from streams.lag import LagMonitor
from streams.observability.server import Monitor
from streams.pipeline import Pipeline
from streams.runtime.publish import StatsPublisher
from tests.integration.conftest import Cluster, PipelineTopics
from tests.integration.pipelines import build_copy
from tests.integration.test_monitor import _ensure_stats_topic

pytestmark = pytest.mark.integration

PARTITIONS = 4
PER_REPLICA = 100  # the signal's records per replica, and the control's lagThreshold


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback URL
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _pipeline(unique: str) -> Pipeline:
    name = f"scale{unique}"
    return build_copy(name, f"{name}.in", f"{name}.out", partitions=PARTITIONS)


@pytest.fixture
def monitor_for(cluster: Cluster) -> Iterator[Callable[[Pipeline], Monitor]]:
    started: list[Monitor] = []

    def start(pipeline: Pipeline) -> Monitor:
        running = Monitor(
            [pipeline],
            kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers),
            interval_s=1.0,
            records_per_replica=PER_REPLICA,
        )
        running.start("127.0.0.1", 0)
        started.append(running)
        return running

    yield start
    for running in started:
        running.close()


def _wait_for(
    monitor: Monitor, group: str, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        status, answer = _get(f"{monitor.url}/api/scale/{group}")
        if status == 200 and done(answer):
            return answer
        assert time.monotonic() < deadline, (status, answer)
        time.sleep(0.5)


def _commit(cluster: Cluster, group: str, offsets: dict[tuple[str, int], int]) -> None:
    consumer = Consumer({**cluster.client_config(), "group.id": group})
    try:
        consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
        )
    finally:
        consumer.close()


def keda_kafka_trigger(
    cluster: Cluster, group: str, topics: list[str], lag_threshold: int
) -> tuple[int, int]:
    """(total lag, replicas) as KEDA's kafka trigger computes them without ``topic`` set.

    Lag per partition = high watermark - committed offset, over every partition of the topics
    the group committed on (``offsetResetPolicy: latest``: no commit counts 0); replicas =
    ceil(total lag / lagThreshold), at most the partitions of those topics
    (``allowIdleConsumers: false``).
    """
    # librdkafka's consumers default to read_committed, whose watermark is the LSO
    consumer = Consumer(
        {**cluster.client_config(), "group.id": group, "isolation.level": "read_uncommitted"}
    )
    try:
        metadata = consumer.list_topics(timeout=10)
        tps = [TopicPartition(t, p) for t in topics for p in sorted(metadata.topics[t].partitions)]
        committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(tps, 10)}
        used = [tp for tp in tps if committed[(tp.topic, tp.partition)] >= 0]
        total = 0
        for tp in used:
            high = consumer.get_watermark_offsets(tp, timeout=10)[1]
            total += max(0, high - committed[(tp.topic, tp.partition)])
    finally:
        consumer.close()
    partitions = len(used)
    return total, min(math.ceil(total / lag_threshold), partitions)


def test_a_thousand_retries_not_due_do_not_scale_out(
    cluster: Cluster,
    pipeline_topics: PipelineTopics,
    monitor_for: Callable[[Pipeline], Monitor],
    unique_id: str,
) -> None:
    pipeline = _pipeline(unique_id)
    pipeline_topics(pipeline)
    stage = pipeline.component("copy")
    group, source, retry = stage.group_id, stage.inputs[0], stage.retry_topics[0]
    producer = Producer({**cluster.client_config(), "enable.idempotence": True})
    for n in range(200):
        producer.produce(source, str(n).encode(), partition=n % PARTITIONS)
    later = str(int(time.time() * 1000) + 3_600_000).encode()
    for n in range(1000):  # partitions 1..3: due in an hour
        producer.produce(
            retry, str(n).encode(), partition=1 + n % 3, headers=[(headers.DUE_MS, later)]
        )
    assert producer.flush(30) == 0
    # the group is caught up on its input and holds its retries at the first not-due record
    offsets = {(source, p): 50 for p in range(PARTITIONS)}
    offsets.update({(retry, p): 0 for p in range(PARTITIONS)})
    _commit(cluster, group, offsets)

    monitor = monitor_for(pipeline)
    answer = _wait_for(monitor, group, lambda a: a["retry_not_due"] == 1000)
    assert answer["lag"] == 0
    assert answer["retry_due"] == 0
    assert answer["partitions"] == PARTITIONS
    assert answer["suggested_replicas"] == 1, answer
    # control: KEDA's kafka trigger over the same offsets scales out
    keda_lag, keda_replicas = keda_kafka_trigger(
        cluster, group, [source, *stage.retry_topics], PER_REPLICA
    )
    assert keda_lag == 1000
    # 1000 / 100 = 10, capped at the partitions of the topics the group committed on
    assert keda_replicas == 2 * PARTITIONS

    # and retries that are due are work: 300 on partition 0, due a second ago
    now = str(int(time.time() * 1000) - 1000).encode()
    for n in range(300):
        producer.produce(retry, str(n).encode(), partition=0, headers=[(headers.DUE_MS, now)])
    assert producer.flush(30) == 0
    answer = _wait_for(monitor, group, lambda a: a["retry_due"] == 300)
    assert answer["retry_not_due"] == 1000
    assert answer["suggested_replicas"] == 3, answer


def test_transaction_markers_are_no_lag(
    cluster: Cluster,
    pipeline_topics: PipelineTopics,
    monitor_for: Callable[[Pipeline], Monitor],
    unique_id: str,
) -> None:
    pipeline = _pipeline(unique_id)
    pipeline_topics(pipeline)
    stage = pipeline.component("copy")
    group, source = stage.group_id, stage.inputs[0]
    producer = Producer(
        {**cluster.client_config(), "transactional.id": f"scale-markers-{unique_id}"}
    )
    producer.init_transactions(30)
    for batch in range(5):
        producer.begin_transaction()
        for n in range(20):
            producer.produce(source, f"{batch}-{n}".encode(), partition=n % PARTITIONS)
        producer.commit_transaction(30)
    # everything consumed, committed as ``last record + 1``: one below each trailing marker
    consumer = Consumer(
        {
            **cluster.client_config(),
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(source, p, 0) for p in range(PARTITIONS)])
    last: dict[int, int] = {}
    seen = 0
    deadline = time.monotonic() + 30
    while seen < 100:
        for message in consumer.consume(100, timeout=0.5):
            partition, offset = message.partition(), message.offset()
            if message.error() is None and partition is not None and offset is not None:
                last[partition] = offset
                seen += 1
        assert time.monotonic() < deadline, seen
    consumer.commit(
        offsets=[TopicPartition(source, p, o + 1) for p, o in last.items()], asynchronous=False
    )
    consumer.close()
    # and an open transaction: 50 records no read_committed reader sees yet
    producer.begin_transaction()
    for n in range(50):
        producer.produce(source, f"open-{n}".encode(), partition=n % PARTITIONS)
    producer.flush(30)
    try:
        monitor = monitor_for(pipeline)
        answer = _wait_for(monitor, group, lambda a: a["current_replicas"] == 0)
        # the lag against the LSO before the correction: one marker per partition
        lags = {
            p.partition: (p.last_stable_offset - (p.committed or 0), p.lag)
            for g in (monitor.snapshot.groups if monitor.snapshot else ())
            if g.group == group
            for p in g.partitions
            if p.topic == source
        }
        assert lags == dict.fromkeys(range(PARTITIONS), (1, 0)), lags
        assert answer["lag"] == 0, answer
        assert answer["suggested_replicas"] == 1
        keda_lag, _ = keda_kafka_trigger(cluster, group, [source], 1)
        assert keda_lag == PARTITIONS + 50  # a marker per partition and the open transaction
    finally:
        producer.abort_transaction(30)


def test_an_open_breaker_holds_scale_out(
    cluster: Cluster,
    admin: AdminClient,
    pipeline_topics: PipelineTopics,
    monitor_for: Callable[[Pipeline], Monitor],
    unique_id: str,
) -> None:
    _ensure_stats_topic(admin)
    pipeline = _pipeline(unique_id)
    pipeline_topics(pipeline)
    stage = pipeline.component("copy")
    group, source = stage.group_id, stage.inputs[0]
    producer = Producer({**cluster.client_config(), "enable.idempotence": True})
    for n in range(3000):
        producer.produce(source, str(n).encode(), partition=n % PARTITIONS)
    assert producer.flush(30) == 0
    monitor = monitor_for(pipeline)
    # control: 3,000 records of lag and no breaker scale out to the partition count
    answer = _wait_for(monitor, group, lambda a: a["lag"] == 3000)
    assert (answer["breaker_open"], answer["suggested_replicas"]) == (False, PARTITIONS)

    pricing = Dependency(f"pricing-{unique_id}", failure_threshold=1, open_for_s=600)

    def down() -> None:
        raise ConnectionError("the pricing service is down")

    with pytest.raises(DependencyUnavailable):
        pricing.call_sync(down)
    publisher = StatsPublisher(KafkaSettings(bootstrap_servers=cluster.bootstrap_servers))
    try:
        # what a worker publishes: its counters and every Dependency's breaker snapshot
        publisher.publish({"kind": "stage", "group": group, "slot": 0, "consumed": 0})
    finally:
        publisher.close()
    answer = _wait_for(monitor, group, lambda a: a["breaker_open"])
    assert answer["suggested_replicas"] == 1, answer
    assert pricing.name in answer["reason"]


def test_an_unknown_group_is_404_and_a_dead_broker_an_error_not_a_hang(
    cluster: Cluster, unique_id: str
) -> None:
    pipeline = _pipeline(unique_id)
    dead = KafkaSettings(bootstrap_servers="127.0.0.1:9")  # discard port: nothing answers
    monitor = Monitor(
        [pipeline],
        kafka=dead,
        interval_s=1.0,
        lag=LagMonitor(dead, request_timeout_s=2.0, read_timeout_s=1.0),
    )
    try:
        monitor.start("127.0.0.1", 0)
        began = time.monotonic()
        status, answer = _get(f"{monitor.url}/api/scale/{pipeline.component('copy').group_id}")
        assert time.monotonic() - began < 2
        assert status == 503
        assert answer["error"].startswith("the last sample failed: cannot"), answer
        status, answer = _get(f"{monitor.url}/api/scale/no.such-group")
        assert status == 404
        assert answer["groups"] == [pipeline.component("copy").group_id]
        assert "unknown group" in answer["error"]
    finally:
        monitor.close()
