"""No record can stall a partition: records too large for where they must go, on the real broker.

The regression: a topic allowed 6 MiB records and a 5,000,122-byte input record failed to
decode; its DLQ write was refused by the producer (message.max.bytes), the worker recreated its
producer and rewound, forever (46 resets, 0 commits in 60 s), and every partition of the worker
stalled. Now every write is checked against its topic's limit first: what can never be written
goes to the DLQ bounded, reason ``unroutable``; what cannot even be written bounded stops the
stage (exit code 3) naming the record.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from pydantic import BaseModel

from streams import headers as h
from streams.codecs import json, raw
from streams.config import KafkaSettings, StageSettings
from streams.exceptions import DeadLetter, RetryLater, StageStoppedError
from streams.kafka.messages import message_headers
from streams.pipeline import Pipeline
from streams.record import Output, Record
from streams.retry import RetryPolicy
from streams.stage import StageRunner
from tests.integration.conftest import Cluster, PipelineTopics
from tests.integration.eos import read_topic

pytestmark = pytest.mark.integration

SIX_MIB = 6 * 1024 * 1024
SMALL = 20_000  # max.message.bytes of the small topics below


class Order(BaseModel):
    order_id: str


def _runner(pipeline: Pipeline, stage: str, cluster: Cluster, **settings: Any) -> StageRunner:
    return StageRunner(
        pipeline.get(stage),
        kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers),
        settings=StageSettings(stats_interval_s=60, **settings),
    )


def _produce(cluster: Cluster, topic: str, records: list[tuple[bytes, bytes, int]]) -> None:
    """(key, value, partition) records, each to the partition given."""
    producer = Producer(cluster.client_config(**{"message.max.bytes": SIX_MIB + 65536}))
    for key, value, partition in records:
        producer.produce(topic, value, key=key, partition=partition)
    assert producer.flush(60) == 0


def _read(cluster: Cluster, topic: str, partitions: int) -> list[Any]:
    return read_topic(cluster.client_config(**{"fetch.max.bytes": 2 * SIX_MIB}), topic, partitions)


def test_an_oversized_input_that_fails_to_decode_goes_to_the_dlq_bounded_and_nothing_stalls(
    cluster: Cluster, pipeline_topics: PipelineTopics
) -> None:
    name = f"big{uuid.uuid4().hex[:6]}"
    source, sink = f"{name}.in", f"{name}.out"
    pipeline = Pipeline(name, partitions=2)
    pipeline.topic(source, config={"max.message.bytes": str(SIX_MIB)})

    @pipeline.stage("parse", inputs=[source], input=json(Order), outputs={sink: raw()})
    def parse(record: Record[Order]) -> bytes:
        return record.value.order_id.encode()

    pipeline_topics(pipeline)
    huge = b"x" * 5_000_122  # not JSON: fails to decode, and is 5x the DLQ's limit
    good = [(f"k{n}".encode(), f'{{"order_id": "o{n}"}}'.encode(), n % 2) for n in range(20)]
    # the huge record sits on partition 0 before ten good ones; partition 1 has only good ones
    _produce(cluster, source, [good[0], (b"huge", huge, 0), *good[1:]])
    runner = _runner(pipeline, "parse", cluster)
    runner.run(idle_timeout_s=6)

    assert runner.stats.producer_resets == 0, "the refused write must not reset the producer"
    assert runner.stats.transactions_aborted == 0
    assert sorted(m.value() for m in _read(cluster, sink, 2)) == sorted(
        f"o{n}".encode() for n in range(20)
    ), "every good record, on both partitions, got through"
    (dead,) = _read(cluster, pipeline.get("parse").dlq_topic, 2)
    found = message_headers(dead)
    assert h.get(found, h.ERROR_REASON) == b"unroutable"
    assert h.get(found, h.TRUNCATED) == b"5000122"
    assert h.get(found, h.ORIGINAL_TOPIC) == source.encode()
    (where,) = [m.offset() for m in _read(cluster, source, 2) if m.key() == b"huge"]
    assert h.get(found, h.ORIGINAL_OFFSET) == str(where).encode()
    assert dead.key() == b"huge"
    kept = dead.value()
    assert 900_000 < len(kept) < 1_048_588
    assert huge.startswith(kept)


def test_records_just_over_the_limit_of_each_path_go_aside_and_just_under_go_through(
    cluster: Cluster, pipeline_topics: PipelineTopics
) -> None:
    """Output, retry tier and DLQ each have max.message.bytes = 20,000 (the input allows more).

    - ``out``: the output is over its topic's limit: the (small) input goes to the DLQ whole,
      reason ``output-rejected``;
    - ``retry``: the input is over the retry topic's limit and asks for a retry: it goes to
      the DLQ cut to fit, ``unroutable``;
    - ``dead``: the input is over the DLQ's limit and is dead-lettered: cut to fit,
      ``unroutable``;
    - ``fits``: just under every limit: written as it is.
    """
    name = f"edge{uuid.uuid4().hex[:6]}"
    source, sink = f"{name}.in", f"{name}.out"
    pipeline = Pipeline(name, partitions=1)
    small = {"max.message.bytes": str(SMALL)}
    pipeline.topic(source, config={"max.message.bytes": str(10 * SMALL)})
    pipeline.topic(sink, config=small)
    pipeline.topic(f"{name}.route.retry.1s", config=small)
    pipeline.topic(f"{name}.route.dlq", config=small)
    tried: dict[str, int] = {}

    @pipeline.stage(
        "route",
        inputs=[source],
        outputs={sink: raw()},
        retry=RetryPolicy(tiers=(1.0,), max_attempts=2, jitter=0.0),
    )
    def route(record: Record[bytes]) -> Output:
        kind = record.key or ""
        tried[kind] = tried.get(kind, 0) + 1
        if kind == "out":
            return Output(b"o" * SMALL)  # over the output topic's limit
        if kind == "retry":
            raise RetryLater("try again")
        if kind == "dead":
            raise DeadLetter("never")
        return Output(record.value)

    pipeline_topics(pipeline)
    fits = b"f" * (SMALL - 1000)
    _produce(
        cluster,
        source,
        [
            (b"out", b"small", 0),
            (b"retry", b"r" * (SMALL + 1), 0),
            (b"dead", b"d" * (SMALL + 1), 0),
            (b"fits", fits, 0),
        ],
    )
    runner = _runner(pipeline, "route", cluster)
    runner.run(idle_timeout_s=5)

    assert runner.stats.producer_resets == 0
    assert [m.value() for m in _read(cluster, sink, 1)] == [fits]
    dead = {m.key(): m for m in _read(cluster, pipeline.get("route").dlq_topic, 1)}
    assert set(dead) == {b"out", b"retry", b"dead"}
    out = message_headers(dead[b"out"])
    assert h.get(out, h.ERROR_REASON) == b"output-rejected"
    assert dead[b"out"].value() == b"small"
    assert h.get(out, h.TRUNCATED) is None
    for key, size in ((b"retry", SMALL + 1), (b"dead", SMALL + 1)):
        found = message_headers(dead[key])
        assert h.get(found, h.ERROR_REASON) == b"unroutable", key
        assert h.get(found, h.TRUNCATED) == str(size).encode()
        assert len(dead[key].value()) < size
    assert tried["retry"] == 1, "the oversized retry record was never written to the tier"
    assert _read(cluster, pipeline.get("route").retry_topics[0], 1) == []


def test_a_record_that_fits_nowhere_stops_the_stage_naming_it(
    cluster: Cluster, pipeline_topics: PipelineTopics
) -> None:
    name = f"nowhere{uuid.uuid4().hex[:6]}"
    source, sink = f"{name}.in", f"{name}.out"
    pipeline = Pipeline(name, partitions=1)
    pipeline.topic(f"{name}.copy.dlq", config={"max.message.bytes": "300"})

    @pipeline.stage("copy", inputs=[source], outputs={sink: raw()})
    def copy(record: Record[bytes]) -> bytes:
        raise DeadLetter("x" * 500)

    pipeline_topics(pipeline)
    _produce(cluster, source, [(b"k", b"v" * 400, 0)])
    runner = _runner(pipeline, "copy", cluster)

    with pytest.raises(StageStoppedError, match=rf"record {source}/0@0 cannot be written") as err:
        runner.run(idle_timeout_s=5)

    assert f"max.message.bytes of {name}.copy.dlq" in err.value.hint
    assert runner.stats.producer_resets == 0


def test_an_output_the_broker_refuses_goes_to_the_dlq_as_output_rejected(
    cluster: Cluster, pipeline_topics: PipelineTopics, admin: AdminClient
) -> None:
    """The broker's own refusal (the topic's limit lowered after the stage read it): the
    transaction aborts, and read again the record goes to the DLQ, output-rejected."""
    from confluent_kafka.admin import (  # type: ignore[attr-defined]  # noqa: PLC0415
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
    )

    name = f"refuse{uuid.uuid4().hex[:6]}"
    source, sink = f"{name}.in", f"{name}.out"
    pipeline = Pipeline(name, partitions=1)
    wait = {"go": False}

    @pipeline.stage("copy", inputs=[source], outputs={sink: raw()})
    def copy(record: Record[bytes]) -> bytes:
        if not wait["go"]:
            # the limits were read at start-up; lower the output's limit under the stage
            resource = ConfigResource(
                "TOPIC",
                sink,
                incremental_configs=[
                    ConfigEntry(
                        "max.message.bytes",
                        "5000",
                        incremental_operation=AlterConfigOpType.SET,
                    )
                ],
            )
            for future in admin.incremental_alter_configs([resource]).values():
                future.result(timeout=30)
            wait["go"] = True
        return record.value * (20 if record.key == "big" else 1)

    pipeline_topics(pipeline)
    _produce(cluster, source, [(b"small", b"s" * 100, 0), (b"big", b"b" * 1000, 0)])
    runner = _runner(pipeline, "copy", cluster)
    runner.run(idle_timeout_s=6)

    assert runner.stats.transactions_aborted >= 1, "the broker's refusal aborted a transaction"
    assert [m.value() for m in _read(cluster, sink, 1)] == [b"s" * 100]
    (dead,) = _read(cluster, pipeline.get("copy").dlq_topic, 1)
    assert dead.key() == b"big"
    assert h.get(message_headers(dead), h.ERROR_REASON) == b"output-rejected"
