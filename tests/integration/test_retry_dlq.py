"""Retry topics and the dead-letter topic on the real broker and registry.

- bad input of every kind lands in the DLQ with its raw bytes and a reason, and the good
  records around it are processed;
- a record that asks to be retried waits in the retry topics (never processed before its due
  time) while the records behind it flow on, and completes exactly once;
- retries run out into the DLQ;
- all routing is exactly-once: with every third transaction aborted on purpose, every input
  ends up exactly once in the output or the DLQ, and the retry topics hold each attempt once.
"""

from __future__ import annotations

import os
import struct
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from pydantic import BaseModel

from streams import headers as h
from streams.codecs import avro, raw
from streams.config import KafkaSettings, StageSettings
from streams.exceptions import DeadLetter, RetryLater
from streams.kafka.messages import message_headers
from streams.pipeline import Pipeline
from streams.record import Output, Record
from streams.retry import RetryPolicy
from streams.serde import AvroSerde, load_schema
from streams.stage import StageRunner
from tests.integration.conftest import Cluster, PipelineTopics, TopicFactory
from tests.integration.eos import AbortEveryThirdRunner, produce_numbered, read_topic

pytestmark = pytest.mark.integration
# How late a due retry may run under light load: the poll loop resumes paused partitions every
# iteration (at most 100 ms apart) and the fetch after a resume takes a round trip or two.
DUE_TOLERANCE_MS = 1500

ROOT = Path(__file__).resolve().parents[2]


def _read(cluster: Cluster, topic: str, partitions: int, *, idle_polls: int = 6) -> list[Any]:
    return read_topic(cluster.client_config(), topic, partitions, idle_polls=idle_polls)


class OrderPlaced(BaseModel):
    order_id: str
    customer_id: str
    sku: str
    quantity: int
    unit_price_cents: int
    placed_at: datetime


def test_bad_input_lands_in_the_dlq_with_raw_bytes_and_reason(
    cluster: Cluster, topic_factory: TopicFactory, pipeline_topics: PipelineTopics
) -> None:
    source, sink = topic_factory("in", partitions=1), topic_factory("out", partitions=1)
    pipeline = Pipeline(f"dlq{uuid.uuid4().hex[:6]}", partitions=1)
    schema = "orders/order_placed.v1.avsc"

    @pipeline.stage(
        "price",
        inputs=[source],
        input=avro(OrderPlaced, schema),
        outputs={sink: raw()},
    )
    def price(record: Record[OrderPlaced]) -> bytes:
        size = 50_000 if record.value.sku == "huge" else 10
        return record.value.order_id.encode() * size

    pipeline_topics(pipeline)
    with SchemaRegistryClient({"url": cluster.schema_registry_url}) as registry:
        serde = AvroSerde(OrderPlaced, load_schema(_schema_path(schema)), registry)

        def order(n: int, sku: str = "s") -> bytes:
            return serde.serialize(
                OrderPlaced(
                    order_id=f"o{n}",
                    customer_id="c",
                    sku=sku,
                    quantity=1,
                    unit_price_cents=5,
                    placed_at=datetime.now(UTC),
                ),
                topic=source,
            )

        good = order(0)
        bad: dict[str, bytes | None] = {
            "random": os.urandom(40),
            "truncated": good[:-4],
            "unknown-id": b"\x00" + struct.pack(">I", 987654321) + good[5:],
            "null": None,
            "huge": order(99, sku="huge"),
        }
        producer = Producer(cluster.client_config())
        producer.produce(source, order(1), key=b"k1")
        for name, value in bad.items():
            producer.produce(source, value, key=name.encode(), headers=[("mine", b"kept")])
            producer.produce(source, order(len(name)), key=b"good-after-" + name.encode())
        producer.flush(30)

        runner = StageRunner(
            pipeline.get("price"),
            kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers),
            settings=StageSettings(max_message_bytes=100_000, stats_interval_s=60),
            registry=registry,
        )
        runner.run(idle_timeout_s=6)

    assert runner.stats.dead_lettered == len(bad)
    outputs = _read(cluster, sink, 1)
    assert len(outputs) == 1 + len(bad), "every good record, before and after each bad one"
    dead = {m.key().decode(): m for m in _read(cluster, pipeline.get("price").dlq_topic, 1)}
    assert set(dead) == set(bad)
    for name, message in dead.items():
        assert message.value() == bad[name], f"{name}: the raw bytes are kept whole"
        hdrs = message_headers(message)
        assert h.get(hdrs, "mine") == b"kept"
        assert h.get(hdrs, h.ORIGINAL_TOPIC) == source.encode()
        assert h.get_int(hdrs, h.ORIGINAL_OFFSET) is not None
        assert h.get(hdrs, h.STAGE) == pipeline.get("price").group_id.encode()
        assert h.get(hdrs, h.ATTEMPT) == b"1"
        assert h.get(hdrs, h.ERROR_MESSAGE)
        assert h.get(hdrs, h.ERROR_STACK)
        reason = h.get(hdrs, h.ERROR_REASON)
        expected = b"output-rejected" if name == "huge" else b"deserialization"
        assert reason == expected, f"{name}: {reason!r}"


def _schema_path(name: str) -> Path:
    return ROOT / "schemas" / name


def test_a_retried_record_waits_for_its_due_time_while_the_rest_flows(
    cluster: Cluster, topic_factory: TopicFactory, pipeline_topics: PipelineTopics
) -> None:
    source, sink = topic_factory("in", partitions=1), topic_factory("out", partitions=1)
    pipeline = Pipeline(f"retry{uuid.uuid4().hex[:6]}", partitions=1)
    failures: Counter[bytes] = Counter()
    processed_at: dict[bytes, float] = {}

    @pipeline.stage(
        "flaky",
        inputs=[source],
        outputs={sink: raw()},
        retry=RetryPolicy(tiers=(1.0, 2.0), max_attempts=3, jitter=0.0),
    )
    def flaky(record: Record[bytes]) -> Output:
        if record.value == b"7" and failures[record.value] < 2:
            failures[record.value] += 1
            raise RetryLater("downstream not ready")
        processed_at[record.value] = time.time()
        return Output(record.value)

    pipeline_topics(pipeline)
    produce_numbered(cluster, source, 200)
    began = time.time()
    runner = StageRunner(
        pipeline.get("flaky"),
        kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers),
        settings=StageSettings(stats_interval_s=60),
    )
    runner.run(idle_timeout_s=6)

    values = [m.value() for m in _read(cluster, sink, 1)]
    assert sorted(values, key=int) == [str(n).encode() for n in range(200)]
    assert failures[b"7"] == 2
    assert runner.stats.retried == 2
    # never before due: 1 s after the first failure, then 2 s after the second
    assert processed_at[b"7"] - began >= 3.0
    # the records behind it were not held up
    assert processed_at[b"199"] < processed_at[b"7"]
    retries = _read(cluster, pipeline.get("flaky").retry_topics[0], 1)
    assert len(retries) == 1
    first = message_headers(retries[0])
    assert h.get(first, h.ATTEMPT) == b"1"
    assert h.get(first, h.ERROR_REASON) == b"retry"
    assert h.get(first, h.ERROR_CLASS) is not None
    assert h.get(first, h.ERROR_STACK) is None, "retry records carry no stack (DLQ only)"
    due = h.get_int(first, h.DUE_MS)
    failed = h.get_int(first, h.FIRST_FAILURE_MS)
    assert due is not None
    assert failed is not None
    assert due - failed >= 1000
    # the second retry: processed at or after its due time, and not much later (light load)
    second = _read(cluster, pipeline.get("flaky").retry_topics[1], 1)
    assert len(second) == 1
    due_second = h.get_int(message_headers(second[0]), h.DUE_MS)
    assert due_second is not None
    done_ms = processed_at[b"7"] * 1000
    assert done_ms >= due_second, "processed before its due time"
    assert done_ms <= due_second + DUE_TOLERANCE_MS, f"{done_ms - due_second:.0f} ms late"


def test_retry_later_longer_than_the_longest_tier_waits_at_least_that_long(
    cluster: Cluster, topic_factory: TopicFactory, pipeline_topics: PipelineTopics
) -> None:
    """RetryLater(delay_s=4) with one 1 s tier: retried after >= 4 s, not after 1 s.

    Before the fix the record came back from the 1 s tier and was retried at once. The record
    is re-parked in the tier (no attempt counted) until its hold time.
    """
    source, sink = topic_factory("in", partitions=1), topic_factory("out", partitions=1)
    pipeline = Pipeline(f"hold{uuid.uuid4().hex[:6]}", partitions=1)
    attempts: list[float] = []

    @pipeline.stage(
        "later",
        inputs=[source],
        outputs={sink: raw()},
        retry=RetryPolicy(tiers=(1.0,), max_attempts=3, jitter=0.0),
    )
    def later(record: Record[bytes]) -> bytes:
        if record.value == b"2":
            attempts.append(time.time())
            if len(attempts) == 1:
                raise RetryLater("come back in 4 s", delay_s=4)
        return record.value

    pipeline_topics(pipeline)
    produce_numbered(cluster, source, 5)
    runner = StageRunner(
        pipeline.get("later"),
        kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers),
        settings=StageSettings(stats_interval_s=60),
    )
    runner.run(idle_timeout_s=8)

    assert len(attempts) == 2, attempts
    assert attempts[1] - attempts[0] >= 4.0, f"retried after {attempts[1] - attempts[0]:.1f} s"
    values = sorted(int(m.value()) for m in _read(cluster, sink, 1))
    assert values == [0, 1, 2, 3, 4]
    assert runner.stats.retried == 1  # re-parking is no retry
    in_tier = _read(cluster, pipeline.get("later").retry_topics[0], 1)
    assert len(in_tier) >= 2, "written once by the failure, then re-parked at least once"
    assert {h.get(message_headers(m), h.ATTEMPT) for m in in_tier} == {b"1"}


def test_retries_run_out_into_the_dlq(
    cluster: Cluster, topic_factory: TopicFactory, pipeline_topics: PipelineTopics
) -> None:
    source, sink = topic_factory("in", partitions=1), topic_factory("out", partitions=1)
    pipeline = Pipeline(f"exhaust{uuid.uuid4().hex[:6]}", partitions=1)

    @pipeline.stage(
        "never",
        inputs=[source],
        outputs={sink: raw()},
        retry=RetryPolicy(tiers=(0.5,), max_attempts=3, jitter=0.0),
    )
    def never(record: Record[bytes]) -> bytes:
        if record.value == b"3":
            raise TimeoutError("the dependency timed out")
        return record.value

    pipeline_topics(pipeline)
    produce_numbered(cluster, source, 10)
    runner = StageRunner(
        pipeline.get("never"),
        kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers),
        settings=StageSettings(stats_interval_s=60),
    )
    runner.run(idle_timeout_s=5)
    dead = _read(cluster, pipeline.get("never").dlq_topic, 1)
    assert [m.value() for m in dead] == [b"3"]
    hdrs = message_headers(dead[0])
    assert h.get(hdrs, h.ERROR_REASON) == b"retries-exhausted"
    assert h.get(hdrs, h.ATTEMPT) == b"3"
    assert h.get(hdrs, h.ERROR_CLASS) == b"builtins.TimeoutError"
    stack = h.get(hdrs, h.ERROR_STACK)
    assert stack is not None
    assert b"the dependency timed out" in stack, "the DLQ keeps the last failure's stack"
    assert h.get(hdrs, h.ORIGINAL_TOPIC) == source.encode()
    assert h.get(hdrs, h.ORIGINAL_OFFSET) == b"3"
    assert len(_read(cluster, sink, 1)) == 9


def test_routing_to_retry_and_dlq_is_exactly_once_across_aborts(
    cluster: Cluster, topic_factory: TopicFactory, pipeline_topics: PipelineTopics
) -> None:
    count = 3000
    source, sink = topic_factory("in", partitions=2), topic_factory("out", partitions=2)
    pipeline = Pipeline(f"eosroute{uuid.uuid4().hex[:6]}", partitions=2)
    attempts: Counter[int] = Counter()

    def transient(n: int) -> bool:
        return n % 10 == 3  # 10 %: fails its first attempt

    def poison(n: int) -> bool:
        return n % 100 == 42  # 1 %: can never succeed

    @pipeline.stage(
        "route",
        inputs=[source],
        outputs={sink: raw()},
        retry=RetryPolicy(tiers=(0.5, 1.0), max_attempts=3, jitter=0.0),
    )
    def route(record: Record[bytes]) -> bytes:
        n = int(record.value)
        attempts[n] += 1
        if poison(n):
            raise DeadLetter("poison")
        if transient(n) and (h.get_int(record.headers, h.ATTEMPT) or 0) == 0:
            raise RetryLater("first attempt fails")
        return record.value

    pipeline_topics(pipeline)
    produce_numbered(cluster, source, count)
    runner = AbortEveryThirdRunner(
        pipeline.get("route"),
        kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers),
        settings=StageSettings(batch_max_records=100, stats_interval_s=60),
    )
    runner.run(idle_timeout_s=8)
    assert runner.stats.transactions_aborted >= 5

    spec = pipeline.get("route")
    out = Counter(int(m.value()) for m in _read(cluster, sink, 2))
    dead = Counter(int(m.value()) for m in _read(cluster, spec.dlq_topic, 2))
    retried = Counter(int(m.value()) for m in _read(cluster, spec.retry_topics[0], 2))
    assert not [n for n, c in out.items() if c > 1], "duplicate outputs"
    assert not [n for n, c in dead.items() if c > 1], "duplicate DLQ records"
    assert set(out) | set(dead) == set(range(count)), "lost records"
    assert not set(out) & set(dead), "a record both output and dead-lettered"
    assert set(dead) == {n for n in range(count) if poison(n)}
    expected_retries = {n for n in range(count) if transient(n) and not poison(n)}
    assert set(retried) == expected_retries
    assert all(c == 1 for c in retried.values()), "a retry written twice"
    # aborted transactions really re-ran handlers: EOS is about effects, not calls
    assert sum(attempts.values()) > count + len(expected_retries)


def test_a_null_header_value_stays_null_through_retry_and_dlq(
    cluster: Cluster, topic_factory: TopicFactory, pipeline_topics: PipelineTopics
) -> None:
    """Regression: a null header value was written to the retry and DLQ records as b""."""
    source, sink = topic_factory("in", partitions=1), topic_factory("out", partitions=1)
    pipeline = Pipeline(f"nullhdr{uuid.uuid4().hex[:6]}", partitions=1)

    @pipeline.stage(
        "fail",
        inputs=[source],
        outputs={sink: raw()},
        retry=RetryPolicy(tiers=(0.5,), max_attempts=2, jitter=0.0),
    )
    def fail(record: Record[bytes]) -> bytes:
        assert record.header("trace") is None
        assert ("trace", None) in record.headers
        raise TimeoutError("always")

    pipeline_topics(pipeline)
    producer = Producer(cluster.client_config())
    sent: list[tuple[str, bytes | None]] = [("trace", None), ("empty", b""), ("kept", b"\x00\xff")]
    producer.produce(source, b"v", b"k", headers=list(sent))
    assert producer.flush(30) == 0
    runner = StageRunner(
        pipeline.get("fail"),
        kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers),
        settings=StageSettings(stats_interval_s=60),
    )
    runner.run(idle_timeout_s=5)

    spec = pipeline.get("fail")
    (retried,) = _read(cluster, spec.retry_topics[0], 1)
    (dead,) = _read(cluster, spec.dlq_topic, 1)
    for routed in (retried, dead):
        theirs = [(name, value) for name, value in message_headers(routed) if name in dict(sent)]
        assert theirs == sent
    assert h.get(message_headers(dead), h.ERROR_REASON) == b"retries-exhausted"
