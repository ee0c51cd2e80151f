"""Aborted output is never visible to read_committed readers."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams.codecs import raw
from streams.config import KafkaSettings, StageSettings
from streams.kafka.messages import message_headers
from streams.pipeline import Pipeline
from streams.record import Output, Record
from tests.integration.conftest import Cluster, PipelineTopics, TopicFactory
from tests.integration.eos import (
    AbortEveryThirdRunner,
    check_exactly_once,
    produce_numbered,
    read_committed,
)

pytestmark = pytest.mark.integration


def test_records_of_aborted_transactions_are_never_read(
    cluster: Cluster, topic_factory: TopicFactory, pipeline_topics: PipelineTopics
) -> None:
    count = 3000
    source, sink = topic_factory("in", partitions=2), topic_factory("out", partitions=2)
    produce_numbered(cluster, source, count)
    pipeline = Pipeline(f"aborts{uuid.uuid4().hex[:6]}")
    holder: dict[str, AbortEveryThirdRunner] = {}

    @pipeline.stage("copy", inputs=[source], outputs={sink: raw()})
    def copy(record: Record[bytes]) -> Output:
        doomed = b"1" if holder["runner"].doomed else b"0"
        return Output(record.value, headers=[("doomed", doomed)])

    pipeline_topics(pipeline)
    runner = AbortEveryThirdRunner(
        pipeline.get("copy"),
        kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers),
        settings=StageSettings(batch_max_records=100, stats_interval_s=60),
    )
    holder["runner"] = runner
    runner.run(idle_timeout_s=8)
    assert runner.stats.transactions_aborted >= 3

    committed = _read_headers(cluster, sink, "read_committed")
    assert committed.count(b"1") == 0, "a record of an aborted transaction was read"
    check_exactly_once(read_committed(cluster, sink, 2, expect=count), count)
    # and the aborted records were really written: a read_uncommitted reader sees them
    assert _read_headers(cluster, sink, "read_uncommitted").count(b"1") >= 100


def _read_headers(cluster: Cluster, topic: str, isolation: str) -> list[bytes]:
    consumer = Consumer(
        cluster.client_config(
            **{
                "group.id": f"h-{uuid.uuid4().hex}",
                "isolation.level": isolation,
                "enable.auto.commit": False,
            }
        )
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(2)])
    flags: list[bytes] = []
    idle = 0
    while idle < 6:
        batch = consumer.consume(1000, timeout=0.5)
        idle = 0 if batch else idle + 1
        for message in batch:
            flags.extend(v or b"" for k, v in message_headers(message) if k == "doomed")
    consumer.close()
    return flags
