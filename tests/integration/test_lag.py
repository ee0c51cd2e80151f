"""LagMonitor against the real broker: offsets match Kafka's own tool, statuses, EOS lag 0.

Statuses are driven by real commits on a clock the test controls (window 30 s of fake time), so
the whole module runs in well under a minute.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.codecs import raw
from streams.config import KafkaSettings, LocalStackSettings, StageSettings
from streams.lag import LagMonitor, PartitionLag, Status
from streams.localstack.components import KafkaBroker
from streams.pipeline import Pipeline
from streams.record import Output, Record
from streams.stage import StageRunner
from tests.integration.conftest import Cluster, PipelineTopics, TopicFactory
from tests.integration.eos import produce_numbered
from tests.integration.groups import commit_group_offsets

pytestmark = pytest.mark.integration


class FakeClock:
    def __init__(self) -> None:
        import time  # noqa: PLC0415

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def monitor(cluster: Cluster) -> Iterator[LagMonitor]:
    with LagMonitor(KafkaSettings(bootstrap_servers=cluster.bootstrap_servers)) as lag_monitor:
        yield lag_monitor


def _by_partition(partitions: tuple[PartitionLag, ...]) -> dict[tuple[str, int], PartitionLag]:
    return {(p.topic, p.partition): p for p in partitions}


def _describe_with_kafka_tool(
    cluster: Cluster, groups: list[str]
) -> dict[tuple[str, str, int], tuple[str, str, str]]:
    """ConsumerGroupCommand --describe: (group, topic, partition) -> (CURRENT, LOG-END, LAG)."""
    broker = KafkaBroker(LocalStackSettings())
    command = [
        "/usr/bin/java",
        "-cp",
        broker.classpath(),
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        "--bootstrap-server",
        cluster.bootstrap_servers,
        "--describe",
    ]
    for group in groups:
        command += ["--group", group]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    rows: dict[tuple[str, str, int], tuple[str, str, str]] = {}
    for line in done.stdout.splitlines():
        cells = line.split()
        if len(cells) >= 6 and cells[0] in groups and cells[2].isdigit():
            rows[(cells[0], cells[1], int(cells[2]))] = (cells[3], cells[4], cells[5])
    return rows


def test_offsets_match_kafka_consumer_group_command_and_lso_lag(
    cluster: Cluster, admin: AdminClient, topic_factory: TopicFactory, monitor: LagMonitor
) -> None:
    topic = topic_factory("describe", partitions=3)
    produce_numbered(cluster, topic, 90, keys=9)
    groups = [f"lag-describe-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    for n, group in enumerate(groups):
        commit_group_offsets(admin, group, {(topic, p): 5 * (n + 1) + p for p in range(3)})
    # an open transaction on partition 0 holds the LSO back while Kafka's tool describes
    producer = Producer(
        cluster.client_config(**{"transactional.id": f"lag-open-{uuid.uuid4().hex}"})
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for n in range(4):
        producer.produce(topic, f"open{n}".encode(), partition=0)
    assert producer.flush(30) == 0
    try:
        sampled = {g.group: g for g in monitor.sample(groups)}
        kafka_rows = _describe_with_kafka_tool(cluster, groups)
    finally:
        producer.abort_transaction(30)
    compared = 0
    for group in groups:
        for (t, p), ours in _by_partition(sampled[group].partitions).items():
            current, log_end, kafka_lag = kafka_rows[(group, t, p)]
            assert ours.committed == int(current)
            assert ours.high_watermark == int(log_end)
            assert ours.lag is not None
            assert int(kafka_lag) == ours.lag + ours.pending_transactional
            if p == 0:
                assert ours.pending_transactional == 4
                assert int(kafka_lag) - ours.lag == 4
            else:
                assert ours.pending_transactional == 0
            compared += 1
    assert compared == 9


def test_scripted_scenarios_drive_each_status(
    cluster: Cluster, admin: AdminClient, topic_factory: TopicFactory
) -> None:
    topic = topic_factory("status")
    produce_numbered(cluster, topic, 100, keys=1)
    tp = (topic, 0)
    names = ["stop", "stall", "warn", "rewind", "ok"]
    group = {name: f"lag-{name}-{uuid.uuid4().hex[:8]}" for name in names}
    # the stalled consumer stays in its group (so it owns the partition) without progressing
    stalled = Consumer(
        cluster.client_config(
            **{
                "group.id": group["stall"],
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
    )
    stalled.subscribe([topic])
    end = 100
    clock = FakeClock()
    monitor = LagMonitor(
        KafkaSettings(bootstrap_servers=cluster.bootstrap_servers),
        window_s=30,
        min_samples=3,
        clock=clock,
    )
    try:
        while not stalled.assignment():
            stalled.poll(0.2)
        warn_offset = 50
        results = {}
        for round_ in range(4):
            if round_:
                produce_numbered(cluster, topic, 20, keys=1)
                end += 20
                clock.now += 10
            if round_ == 0:
                commit_group_offsets(admin, group["stop"], {tp: 30})
                commit_group_offsets(admin, group["rewind"], {tp: 90})
            if round_ == 2:
                commit_group_offsets(admin, group["rewind"], {tp: 10})
            stalled.commit(offsets=[TopicPartition(topic, 0, 40)], asynchronous=False)
            warn_offset += 5
            commit_group_offsets(admin, group["warn"], {tp: warn_offset})
            commit_group_offsets(admin, group["ok"], {tp: end})
            results = {g.group: g for g in monitor.sample(list(group.values()))}
        status = {name: results[group[name]].status for name in names}
        assert status == {
            "stop": Status.STOP,
            "stall": Status.STALL,
            "warn": Status.WARN,
            "rewind": Status.REWIND,
            "ok": Status.OK,
        }, {name: results[group[name]].rule for name in names}
        assert results[group["stall"]].members == 1
        assert results[group["stop"]].members == 0
        assert "no commit for 30 s" in results[group["stop"]].rule
        assert "went back from 90 to 10" in results[group["rewind"]].rule
        warn = results[group["warn"]].partitions[0]
        assert warn.velocity is not None
        assert warn.velocity > 0
    finally:
        monitor.close()
        stalled.close()


def test_caught_up_transactional_stage_shows_lag_zero_not_one(
    cluster: Cluster,
    topic_factory: TopicFactory,
    pipeline_topics: PipelineTopics,
    monitor: LagMonitor,
) -> None:
    source, sink = topic_factory("in", partitions=2), topic_factory("out", partitions=2)
    # transactional input: every partition ends with a commit marker
    producer = Producer(cluster.client_config(**{"transactional.id": f"lag-in-{uuid.uuid4().hex}"}))
    producer.init_transactions(30)
    producer.begin_transaction()
    for n in range(200):
        producer.produce(source, str(n).encode(), key=f"k{n % 10}".encode())
    producer.commit_transaction(30)
    pipeline = Pipeline(f"lag{uuid.uuid4().hex[:6]}")

    @pipeline.stage("copy", inputs=[source], outputs={sink: raw()})
    def copy(record: Record[bytes]) -> Output:
        return Output(record.value)

    pipeline_topics(pipeline)
    runner = StageRunner(
        pipeline.get("copy"),
        kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers),
        settings=StageSettings(session_timeout_ms=6000, stats_interval_s=60),
    )
    runner.run(max_records=200, idle_timeout_s=5)
    (group,) = monitor.sample([pipeline.get("copy").group_id])
    inputs = [p for p in group.partitions if p.topic == source]
    assert len(inputs) == 2
    for p in inputs:
        assert p.lag == 0, p
        assert p.committed == p.last_stable_offset == p.high_watermark
    view = monitor.pipeline_view(pipeline, [group])
    (stage,) = view.stages
    assert (stage.input_lag, stage.dlq_depth) == (0, 0)
    assert set(stage.retry_backlog) == set(pipeline.get("copy").retry_topics)
    assert view.end_to_end_lag_seconds == 0.0


def test_commit_one_below_a_trailing_marker_reads_as_lag_zero(
    cluster: Cluster, admin: AdminClient, topic_factory: TopicFactory, monitor: LagMonitor
) -> None:
    topic = topic_factory("marker")
    producer = Producer(cluster.client_config(**{"transactional.id": f"lag-m-{uuid.uuid4().hex}"}))
    producer.init_transactions(30)
    producer.begin_transaction()
    for n in range(10):
        producer.produce(topic, str(n).encode(), partition=0)
    producer.commit_transaction(30)
    group = f"lag-marker-{uuid.uuid4().hex[:8]}"
    commit_group_offsets(
        admin, group, {(topic, 0): 10}
    )  # last record + 1: the marker is at offset 10
    (result,) = monitor.sample([group])
    (p,) = result.partitions
    assert (p.committed, p.last_stable_offset) == (10, 11)
    assert p.lag == 0
    assert "markers or aborted" in p.rule


def test_partitions_without_commit_show_none(
    cluster: Cluster, admin: AdminClient, topic_factory: TopicFactory, monitor: LagMonitor
) -> None:
    topic = topic_factory("nocommit", partitions=2)
    producer = Producer(cluster.client_config())
    for n in range(20):
        producer.produce(topic, str(n).encode(), partition=n % 2)
    assert producer.flush(30) == 0
    group = f"lag-nocommit-{uuid.uuid4().hex[:8]}"
    commit_group_offsets(admin, group, {(topic, 0): 3})
    (result,) = monitor.sample([group], topics={group: [topic]})
    by_partition = {p.partition: p for p in result.partitions}
    assert by_partition[0].committed == 3
    assert by_partition[0].lag is not None
    assert by_partition[0].lag > 0
    assert by_partition[0].lag_seconds_method == "read"
    assert (by_partition[1].committed, by_partition[1].lag) == (None, None)
    assert by_partition[1].to_dict()["lag"] is None
    assert result.sum_lag == by_partition[0].lag


def _transactions(cluster: Cluster, topic: str, sizes: list[int], *, aborted: int = 0) -> None:
    """Committed transactions of the given sizes on partition 0 (a marker after each), and
    ``aborted`` records in one aborted transaction between the first two."""
    producer = Producer(cluster.client_config(**{"transactional.id": f"lag-tx-{uuid.uuid4().hex}"}))
    producer.init_transactions(30)
    for n, size in enumerate(sizes):
        producer.begin_transaction()
        for k in range(size):
            producer.produce(topic, f"{n}-{k}".encode(), partition=0)
        producer.commit_transaction(30)
        if n == 0 and aborted:
            producer.begin_transaction()
            for k in range(aborted):
                producer.produce(topic, f"aborted-{k}".encode(), partition=0)
            assert producer.flush(30) == 0
            producer.abort_transaction(30)


def test_dlq_depth_and_retry_backlog_count_records_not_offsets(
    cluster: Cluster,
    admin: AdminClient,
    topic_factory: TopicFactory,
    pipeline_topics: PipelineTopics,
) -> None:
    """DLQ depth was LSO - log start: it counted every transaction marker (4,283 shown against
    4,186 records). Now it counts what a read_committed consumer reads."""
    source, sink = topic_factory("in"), topic_factory("out")
    pipeline = Pipeline(f"lagdlq{uuid.uuid4().hex[:6]}")

    @pipeline.stage("copy", inputs=[source], outputs={sink: raw()})
    def copy(record: Record[bytes]) -> Output:
        return Output(record.value)

    pipeline_topics(pipeline)
    spec = pipeline.get("copy")
    dlq, retry = spec.dlq_topic, spec.retry_topics[0]
    sizes = [5, 1, 7, 3, 1, 4]  # 21 records in 6 transactions: 6 commit markers between them
    _transactions(cluster, dlq, sizes, aborted=4)
    _transactions(cluster, retry, [3, 3, 3])  # offsets 0-2, marker 3, 4-6, marker 7, 8-10, 11
    commit_group_offsets(admin, spec.group_id, {(retry, 0): 4})  # the first transaction is done
    clock = FakeClock()
    monitor = LagMonitor(KafkaSettings(bootstrap_servers=cluster.bootstrap_servers), clock=clock)
    (stage,) = monitor.pipeline_view(pipeline).stages
    assert stage.dlq_depth == sum(sizes) == 21
    assert stage.retry_backlog[retry] == 6
    assert stage.counts_exact
    offsets = monitor._fetch.list_offsets([(dlq, 0), (retry, 0)])
    # the controls: what the old formula shows for the same partitions
    assert offsets[(dlq, 0)].last_stable_offset - offsets[(dlq, 0)].log_start == 21 + 4 + 7
    assert offsets[(retry, 0)].last_stable_offset - 4 == 8

    # a steady DLQ costs no read; growth is read from where the last read stopped
    scans: list[dict[tuple[str, int], tuple[int, int]]] = []
    scan = monitor._side._scan

    def spy(ranges: Mapping[tuple[str, int], tuple[int, int]]) -> Any:
        scans.append(dict(ranges))
        return scan(ranges)

    monitor._side._scan = spy
    clock.now += 10
    (stage,) = monitor.pipeline_view(pipeline).stages
    assert stage.dlq_depth == 21
    assert scans == [{}]
    assert stage.dlq_inflow_per_s == 0.0
    _transactions(cluster, dlq, [2, 2])
    commit_group_offsets(
        admin, spec.group_id, {(retry, 0): 12}
    )  # retries done: the group is caught up
    clock.now += 10
    (stage,) = monitor.pipeline_view(pipeline).stages
    monitor.close()
    assert stage.dlq_depth == 25
    assert scans[-1] == {(dlq, 0): (32, 38)}  # 21 records + 4 aborted + 7 markers = 32 read
    # inflow in records too: 4 records in 20 s (the offsets grew by 6: 0.3/s)
    assert stage.dlq_inflow_per_s == pytest.approx(0.2)
    assert stage.retry_backlog[retry] == 0
    assert stage.rule == f"WARN: dead-letter topic {dlq} grows at 0.20 records/s"
