"""A stage copies every record exactly once (in-process runner, no faults)."""

from __future__ import annotations

import uuid

import pytest

from streams.codecs import raw
from streams.config import KafkaSettings, StageSettings
from streams.pipeline import Pipeline
from streams.record import Output, Record
from streams.stage import StageRunner
from tests.integration.conftest import Cluster, PipelineTopics, TopicFactory
from tests.integration.eos import check_exactly_once, produce_numbered, read_committed

pytestmark = pytest.mark.integration


def _settings() -> StageSettings:
    # 1,000-record transactions: these runs of a few thousand records span several of them
    return StageSettings(session_timeout_ms=6000, stats_interval_s=60, batch_max_records=1000)


def test_sync_stage_copies_each_record_once_in_key_order(
    cluster: Cluster, topic_factory: TopicFactory, pipeline_topics: PipelineTopics
) -> None:
    source, sink = topic_factory("in", partitions=3), topic_factory("out", partitions=3)
    produce_numbered(cluster, source, 5000)
    pipeline = Pipeline(f"basic{uuid.uuid4().hex[:6]}")

    @pipeline.stage("copy", inputs=[source], outputs={sink: raw()})
    def copy(record: Record[bytes]) -> Output:
        return Output(record.value)

    pipeline_topics(pipeline)
    runner = StageRunner(
        pipeline.get("copy"),
        kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers),
        settings=_settings(),
    )
    runner.run(max_records=5000, idle_timeout_s=20)
    assert runner.stats.consumed == 5000
    assert runner.stats.transactions_committed >= 5
    check_exactly_once(read_committed(cluster, sink, 3, expect=5000), 5000)


def test_async_stage_keeps_input_order_per_partition(
    cluster: Cluster, topic_factory: TopicFactory, pipeline_topics: PipelineTopics
) -> None:
    import asyncio  # noqa: PLC0415
    import random  # noqa: PLC0415

    source, sink = topic_factory("in", partitions=2), topic_factory("out", partitions=2)
    produce_numbered(cluster, source, 2000)
    pipeline = Pipeline(f"async{uuid.uuid4().hex[:6]}")
    in_flight = {"now": 0, "max": 0}

    @pipeline.stage("slowcopy", inputs=[source], outputs=[sink], concurrency=8)
    async def slow_copy(record: Record[bytes]) -> bytes:
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        await asyncio.sleep(random.uniform(0, 0.003))  # completes out of order
        in_flight["now"] -= 1
        return record.value

    pipeline_topics(pipeline)
    runner = StageRunner(
        pipeline.get("slowcopy"),
        kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers),
        settings=_settings(),
    )
    runner.run(max_records=2000, idle_timeout_s=20)
    assert 1 < in_flight["max"] <= 8
    check_exactly_once(read_committed(cluster, sink, 2, expect=2000), 2000)
