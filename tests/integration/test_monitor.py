"""`streams monitor` in-process against the real broker: a lagging group and a worker's stats."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from prometheus_client.parser import text_string_to_metric_families

from streams.config import KafkaSettings
from streams.lag import GroupLag, PartitionLag, Status
from streams.observability.exporter import MetricsExporter
from streams.observability.server import Monitor
from streams.pipeline import STATS_TOPIC
from streams.runtime.publish import StatsPublisher
from tests.integration.conftest import Cluster, TopicFactory

pytestmark = pytest.mark.integration

RECORDS_PER_PARTITION = 10
COMMITTED = {0: 4, 1: 7, 2: 10}


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback URL
        body: bytes = response.read()
        return body


def _ensure_stats_topic(admin: AdminClient) -> None:
    if STATS_TOPIC in admin.list_topics(timeout=10).topics:
        return
    topic = NewTopic(STATS_TOPIC, 1, 1, config={"cleanup.policy": "compact"})
    for future in admin.create_topics([topic]).values():
        try:
            future.result(timeout=30)
        except Exception as error:
            if "already exists" not in str(error).lower():  # else: created meanwhile
                raise


@pytest.fixture
def lagging_group(cluster: Cluster, topic_factory: TopicFactory) -> tuple[str, str]:
    topic = topic_factory("in", partitions=3)
    producer = Producer(cluster.client_config())
    for partition in range(3):
        for n in range(RECORDS_PER_PARTITION):
            producer.produce(topic, f"v{n}".encode(), partition=partition)
    assert producer.flush(30) == 0
    group = f"test.monitor.{uuid.uuid4().hex[:8]}"
    consumer = Consumer({**cluster.client_config(), "group.id": group})
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, p, offset) for p, offset in COMMITTED.items()],
            asynchronous=False,
        )
    finally:
        consumer.close()
    return group, topic


@pytest.fixture
def monitor(cluster: Cluster) -> Iterator[Monitor]:
    running = Monitor(
        kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers),
        interval_s=1.0,
        cluster_name="itest",
    )
    running.start("127.0.0.1", 0)
    yield running
    running.close()


def _families(body: bytes) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, float(sample.value)))
    return found


def test_monitor_exports_real_lag_and_worker_stats(
    cluster: Cluster, admin: AdminClient, lagging_group: tuple[str, str], monitor: Monitor
) -> None:
    group, topic = lagging_group
    _ensure_stats_topic(admin)
    stage = f"{group}.stage"
    publisher = StatsPublisher(KafkaSettings(bootstrap_servers=cluster.bootstrap_servers))
    publisher.publish(
        {"kind": "stage", "group": stage, "slot": 1, "consumed": 42, "produced": 40, "retried": 2}
    )
    publisher.close()

    deadline = time.monotonic() + 30
    while True:
        families = _families(_get(monitor.url + "/metrics"))
        lag = {
            labels["partition"]: value
            for labels, value in families.get("kafka_consumergroup_group_lag", [])
            if labels["group"] == group
        }
        workers = [
            value
            for labels, value in families.get("streams_stage_consumed_total", [])
            if labels == {"group": stage, "slot": "1"}
        ]
        if (len(lag) == 3 and workers) or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    assert lag == {str(p): RECORDS_PER_PARTITION - c for p, c in COMMITTED.items()}
    assert workers == [42]
    (labels, _), *_ = [
        s for s in families["kafka_consumergroup_group_lag"] if s[0]["group"] == group
    ]
    assert set(labels) == {
        "cluster_name",
        "group",
        "topic",
        "partition",
        "member_host",
        "consumer_id",
        "client_id",
    }
    assert labels["cluster_name"] == "itest"
    assert labels["topic"] == topic
    assert labels["member_host"] == ""  # the group has no live member
    group_labels = {"cluster_name": "itest", "group": group}
    assert (group_labels, 9.0) in families["kafka_consumergroup_group_sum_lag"]
    assert (group_labels, 6.0) in families["kafka_consumergroup_group_max_lag"]
    assert ({"cluster_name": "itest", "topic": topic, "partition": "0"}, 10.0) in families[
        "kafka_partition_latest_offset"
    ]
    statuses = [
        labels["status"]
        for labels, value in families["streams_group_status"]
        if labels["group"] == group and value == 1
    ]
    assert len(statuses) == 1

    # how fast a scrape is: bench/lag_snapshot.py (a benchmark, not an assertion)

    state = json.loads(_get(monitor.url + "/api/state"))
    assert set(state) >= {"groups", "pipelines", "workers", "history", "taken_at", "error"}
    (described,) = [g for g in state["groups"] if g["group"] == group]
    assert {p["partition"]: p["lag"] for p in described["partitions"]} == {0: 6, 1: 3, 2: 0}
    assert any(w["group"] == stage and w["consumed"] == 42 for w in state["workers"])
    assert _get(monitor.url + "/health") == b"ok\n"


def _synthetic(groups: int, partitions: int) -> tuple[GroupLag, ...]:
    built = []
    for g in range(groups):
        parts = tuple(
            PartitionLag(
                group=f"group-{g}",
                topic=f"topic-{g % 20}",
                partition=p,
                committed=1000 + p,
                log_start=0,
                high_watermark=2000,
                last_stable_offset=2000,
                lag=1000 - p,
                pending_transactional=0,
                lag_seconds=12.5,
                lag_seconds_method="read",
                velocity=None,
                eta_seconds=None,
                status=Status.OK,
                rule="caught up",
                data_loss=False,
                hanging_transaction=False,
            )
            for p in range(partitions)
        )
        built.append(GroupLag(f"group-{g}", "Stable", 1, parts, Status.OK, "ok", 1000, 1000, 12.5))
    return tuple(built)


def test_a_scrape_serves_the_page_rendered_after_the_sample_at_200_groups_by_50_partitions(
    monitor: Monitor,
) -> None:
    """After a sample the sampler renders the page once; a scrape then serves those bytes
    (it does not render again, nor ask Kafka). How long either takes is measured by
    bench/lag_snapshot.py, not here."""
    base = monitor.snapshot
    assert base is not None
    big = replace(base, groups=_synthetic(200, 50), views=(), workers=())
    body = MetricsExporter(lambda: big).render()
    # stop the sampler first: a real sample landing in between would replace the big one
    monitor._stop.set()
    assert monitor._sampler is not None
    monitor._sampler.join(timeout=30)
    monitor._snapshot = big  # what the sampler thread does after a sample
    rendered = monitor.exporter.render()  # ... and then it renders (Monitor._run)
    assert rendered == body
    assert monitor.exporter.render() is rendered  # served from the cache: no second rendering
    assert _get(monitor.url + "/metrics") == body
    assert body.count(b"\nkafka_consumergroup_group_lag{") == 200 * 50
