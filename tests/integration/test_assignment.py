"""How a stage's partitions are spread over its workers, and where a worker starts them.

Balance: a stage reads its input and its retry topics; every worker must get a fair share of
each topic (within one partition), whatever the order in which workers join or leave. The
consumers here are built from the stage runner's own consumer settings.

Starts: a worker killed with a transaction open leaves its offsets pending; the worker that
takes its partitions over must wait for them, even when its assignment changes meanwhile,
and never start from the beginning (streams.kafka.starts).
"""

from __future__ import annotations

import itertools
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, ConsumerGroupState, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._group import ConsumerGroupDescription

from streams.spec import StageSpec
from streams.stage import StageRunner
from tests.integration.conftest import Cluster, PipelineTopics, TopicFactory
from tests.integration.eos import start_worker
from tests.integration.pipelines import build_copy
from tests.integration.test_stage_faults import _env, _stop, _wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 4


def _stage_consumer(runner: StageRunner, cluster: Cluster) -> Consumer:
    config = runner._consumer_config()  # the settings a worker of this stage runs with
    config["bootstrap.servers"] = cluster.bootstrap_servers
    consumer = Consumer(config)
    # as a worker does (streams.stage.runner._require_topics): subscribed to a topic its
    # metadata does not list yet, librdkafka looks again only at the next metadata refresh
    # (minutes), and the group would settle without that topic's partitions
    deadline = time.monotonic() + 30
    while set(runner.spec.subscriptions) - set(consumer.list_topics(timeout=10).topics):
        assert time.monotonic() < deadline, "the stage's topics never showed in the metadata"
        time.sleep(0.5)
    consumer.subscribe(runner.spec.subscriptions)
    return consumer


def _settle(consumers: list[Consumer], topics: list[str]) -> list[Counter[str]]:
    """Poll every consumer until together they own every partition of ``topics`` once and the
    assignment has not changed for 2 s; each consumer's partition count per topic."""
    deadline = time.monotonic() + 90
    stable_since, last = time.monotonic(), None
    while time.monotonic() < deadline:
        for consumer in consumers:
            consumer.poll(0.05)
        owned = [
            sorted((tp.topic, tp.partition) for tp in consumer.assignment())
            for consumer in consumers
        ]
        if owned != last:
            stable_since, last = time.monotonic(), owned
        complete = sorted(itertools.chain.from_iterable(owned)) == sorted(
            (topic, p) for topic in topics for p in range(PARTITIONS)
        )
        if complete and time.monotonic() - stable_since > 2:
            return [Counter(topic for topic, _ in mine) for mine in owned]
    raise AssertionError(f"the group did not settle: {last}")


def _assert_fair(shares: list[Counter[str]], topics: list[str], when: str) -> None:
    for topic in topics:
        counts = [share[topic] for share in shares]
        assert max(counts) - min(counts) <= 1, f"{when}: {topic} spread {counts}"
        assert min(counts) >= PARTITIONS // len(shares), f"{when}: {topic} spread {counts}"


@pytest.mark.parametrize("workers", [2, 3])
def test_every_worker_gets_a_fair_share_of_each_topic_in_every_join_order(
    cluster: Cluster, topic_factory: TopicFactory, pipeline_topics: PipelineTopics, workers: int
) -> None:
    for order in itertools.permutations(range(workers)):
        source = topic_factory("in", partitions=PARTITIONS)
        sink = topic_factory("out", partitions=PARTITIONS)
        env = _env(cluster, source, sink)
        pipeline = build_copy(env["TEST_PIPELINE"], source, sink)
        pipeline_topics(pipeline)
        spec = pipeline.component("copy")
        assert isinstance(spec, StageSpec)
        topics = list(spec.subscriptions)
        assert len(topics) == 3  # the input and two retry tiers
        runners = [StageRunner(spec, slot=slot) for slot in order]
        consumers: list[Consumer] = []
        try:
            for runner in runners:
                consumers.append(_stage_consumer(runner, cluster))
                _assert_fair(_settle(consumers, topics), topics, f"order {order}")
            # the last to join leaves: the others share its partitions fairly again
            consumers.pop().close()
            _assert_fair(_settle(consumers, topics), topics, f"order {order}, one left")
        finally:
            for consumer in consumers:
                consumer.close()


def test_after_a_kill_the_remaining_workers_share_each_topic_fairly(
    cluster: Cluster, topic_factory: TopicFactory, pipeline_topics: PipelineTopics, tmp_path: Path
) -> None:
    """Three worker processes; one is SIGKILLed (no leave): after its session times out, the
    two left own every topic half and half, and both work on the main input."""
    source = topic_factory("in", partitions=PARTITIONS)
    sink = topic_factory("out", partitions=PARTITIONS)
    env = _env(cluster, source, sink)
    pipeline = build_copy(env["TEST_PIPELINE"], source, sink)
    pipeline_topics(pipeline)
    spec = pipeline.component("copy")
    group = spec.group_id
    workers = [start_worker(env, "copy", slot, log=tmp_path / f"w{slot}.log") for slot in range(3)]
    try:
        _wait_for(lambda: _members(cluster, group) == 3, 90, "three members")
        workers[0].kill()
        workers[0].wait(10)
        _wait_for(lambda: _members(cluster, group) == 2, 60, "the killed member to leave")
        shares = _wait_settled_shares(cluster, group)
        _assert_fair(shares, list(spec.subscriptions), "after a kill")
        assert all(share[source] == 2 for share in shares), shares
    finally:
        for worker in workers:
            _stop(worker)


def _members(cluster: Cluster, group: str) -> int:
    return len(_describe(cluster, group).members)


def _describe(cluster: Cluster, group: str) -> ConsumerGroupDescription:
    admin = AdminClient(cluster.client_config())
    description: ConsumerGroupDescription = admin.describe_consumer_groups([group])[group].result(
        timeout=20
    )
    return description


def _wait_settled_shares(cluster: Cluster, group: str) -> list[Counter[str]]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        description = _describe(cluster, group)
        if description.state == ConsumerGroupState.STABLE:
            shares = [
                Counter(tp.topic for tp in member.assignment.topic_partitions)
                for member in description.members
            ]
            if sum(sum(share.values()) for share in shares) == 3 * PARTITIONS:
                return shares
        time.sleep(0.5)
    raise AssertionError("the group did not settle after the kill")


def test_a_new_owner_waits_for_offsets_a_stopped_workers_transaction_holds(
    cluster: Cluster, topic_factory: TopicFactory, pipeline_topics: PipelineTopics, tmp_path: Path
) -> None:
    """Offsets 5 committed on every partition, then a transaction that sends offsets 10 and
    stays open (a worker SIGKILLed mid-batch). A worker takes the partitions over; a second
    joins while the first waits, which changes its assignment. Both must start at 5 once the
    transaction is aborted: never at 0 (librdkafka's own fetch falls back to
    auto.offset.reset then), and nothing of offsets 0-4 may reach the output again."""
    per_partition = 60
    source = topic_factory("in", partitions=PARTITIONS)
    sink = topic_factory("out", partitions=PARTITIONS)
    producer = Producer(cluster.client_config())
    for p in range(PARTITIONS):
        for i in range(per_partition):
            producer.produce(source, str(p * 1000 + i).encode(), partition=p)
    assert producer.flush(30) == 0
    env = _env(cluster, source, sink)
    pipeline = build_copy(env["TEST_PIPELINE"], source, sink)
    pipeline_topics(pipeline)
    group = pipeline.component("copy").group_id

    # the group's committed offsets: 5, then 10 pending in a transaction left open
    member = Consumer(cluster.client_config(**{"group.id": group, "enable.auto.commit": False}))
    member.subscribe([source])
    _wait_for(lambda: member.poll(0.2) is not None or len(member.assignment()) == 4, 60, "join")
    member.commit(
        offsets=[TopicPartition(source, p, 5) for p in range(PARTITIONS)], asynchronous=False
    )
    stray = Producer(
        cluster.client_config(
            **{"transactional.id": f"{group}.9", "transaction.timeout.ms": 120_000}
        )
    )
    stray.init_transactions(30)
    stray.begin_transaction()
    stray.produce(sink, b"-1", partition=0)
    stray.send_offsets_to_transaction(
        [TopicPartition(source, p, 10) for p in range(PARTITIONS)],
        member.consumer_group_metadata(),
        30,
    )
    assert stray.flush(10) == 0
    member.close()

    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    workers: list[subprocess.Popen[bytes]] = []
    try:
        workers.append(start_worker(env, "copy", 0, log=logs[0]))
        _wait_for(lambda: "partitions assigned" in logs[0].read_text(), 60, "the first worker")
        time.sleep(4)  # its committed-offset fetch waits for the open transaction
        workers.append(start_worker(env, "copy", 1, log=logs[1]))
        _wait_for(lambda: "partitions assigned" in logs[1].read_text(), 60, "the second worker")
        time.sleep(8)  # the assignments changed while the offsets were pending
        early = _read_values(cluster, sink)
        stray.abort_transaction(30)
        expected = {p * 1000 + i for p in range(PARTITIONS) for i in range(5, per_partition)}
        _wait_for(lambda: len(_read_values(cluster, sink)) >= len(expected), 120, "the output")
        time.sleep(3)  # anything more (a restart at 0) would show up now
        values = _read_values(cluster, sink)
    finally:
        for worker in workers:
            _stop(worker)
    assert early == [], f"records processed while their offsets were pending: {early[:10]}"
    duplicates = sorted(v for v, n in Counter(values).items() if n > 1)
    assert not duplicates, f"{len(duplicates)} processed twice, first {duplicates[:10]}"
    assert set(values) == expected, f"again from 0-4: {sorted(set(values) - expected)[:10]}"
    assert "waiting for the committed offsets" in logs[0].read_text()


def _read_values(cluster: Cluster, topic: str) -> list[int]:
    reader = Consumer(
        cluster.client_config(**{"group.id": "values-reader", "isolation.level": "read_committed"})
    )
    try:
        reader.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        values: list[int] = []
        idle = 0
        while idle < 3:
            batch = reader.consume(500, timeout=0.5)
            idle = 0 if batch else idle + 1
            values.extend(int(m.value() or b"-1") for m in batch if m.error() is None)
        return values
    finally:
        reader.close()
