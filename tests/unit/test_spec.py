"""streams.spec: one component shape for stages and sinks, and how each is named."""

from __future__ import annotations

from typing import Any

from streams.codecs import raw
from streams.database import SinkTransaction
from streams.pipeline import Pipeline
from streams.record import Record
from streams.retry import RetryPolicy


def build() -> Pipeline:
    pipeline = Pipeline("orders", partitions=2)

    @pipeline.stage(
        "enrich",
        inputs=["orders.placed"],
        outputs={"orders.priced": raw()},
        retry=RetryPolicy(tiers=(2, 60)),
    )
    def enrich(record: Record[Any]) -> bytes:
        return bytes(record.value)

    @pipeline.sink("store", inputs=["orders.priced"], database="sqlite:///x.db")
    def store(record: Record[Any], tx: SinkTransaction) -> None:
        return None

    return pipeline


def test_a_stage_is_named_after_its_pipeline_and_slot() -> None:
    stage = build().get("enrich")

    assert stage.kind == "stage"
    assert stage.group_id == "orders.enrich"
    assert stage.client_id(3) == "orders.enrich.3"
    assert stage.transactional_id(3) == "orders.enrich.3"
    assert stage.retry_topics == ["orders.enrich.retry.2s", "orders.enrich.retry.1m"]
    assert stage.dlq_topic == "orders.enrich.dlq"
    assert stage.subscriptions == ["orders.placed", *stage.retry_topics]
    assert stage.lag_topics == stage.subscriptions
    assert stage.written_topics == ["orders.priced", *stage.retry_topics, "orders.enrich.dlq"]


def test_a_sink_has_the_same_shape_with_nothing_written_to_kafka() -> None:
    sink = build().get_sink("store")

    assert sink.kind == "sink"
    assert sink.group_id == "orders.store"
    assert sink.client_id(0) == "orders.store.0"
    assert dict(sink.outputs) == {}
    assert sink.retry_topics == []
    assert sink.dlq_topic is None
    assert sink.subscriptions == ["orders.priced"]
    assert sink.written_topics == []


def test_every_component_is_read_through_the_same_attributes() -> None:
    described = [
        (c.kind, c.group_id, list(c.outputs), c.retry_topics, c.dlq_topic) for c in build().stages
    ]

    assert described == [
        (
            "stage",
            "orders.enrich",
            ["orders.priced"],
            ["orders.enrich.retry.2s", "orders.enrich.retry.1m"],
            "orders.enrich.dlq",
        ),
        ("sink", "orders.store", [], [], None),
    ]
