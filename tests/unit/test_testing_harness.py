"""StageHarness: a stage's handler on in-memory records, through the real serdes."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path

import pytest
from pydantic import BaseModel

from streams.codecs import avro, json, text
from streams.exceptions import DeadLetter, OutputTopicError, SerializationError
from streams.pipeline import Pipeline
from streams.record import Output, Record
from streams.retry import RetryPolicy
from streams.testing import Produced, StageHarness


class RawOrder(BaseModel):
    order_id: str
    total: int


class Placed(BaseModel):
    order_id: str
    doubled: int


pipeline = Pipeline("orders")


@pipeline.stage(
    "validate",
    inputs=["orders.raw"],
    input=json(RawOrder),
    outputs={"orders.placed": json(Placed)},
)
def validate(record: Record[RawOrder]) -> Placed:
    return Placed(order_id=record.value.order_id, doubled=record.value.total * 2)


@pipeline.stage(
    "validate_async",
    inputs=["orders.raw"],
    input=json(RawOrder),
    outputs={"orders.placed": json(Placed)},
)
async def validate_async(record: Record[RawOrder]) -> Placed:
    return Placed(order_id=record.value.order_id, doubled=record.value.total * 2)


@pipeline.stage(
    "split",
    inputs=["orders.raw"],
    input=json(RawOrder),
    outputs={"orders.placed": json(Placed), "orders.audit": text()},
)
def split(record: Record[RawOrder]) -> list[Output]:
    if record.value.total < 0:
        return []
    return [
        Output(Placed(order_id=record.value.order_id, doubled=0), topic="orders.placed"),
        Output(f"seen {record.value.order_id}", topic="orders.audit", key=None),
        Output(f"offset {record.offset}", topic="orders.audit", headers=[("h", b"1")]),
    ]


def test_a_model_is_encoded_then_handled_and_the_output_decoded() -> None:
    harness = StageHarness(pipeline.get("validate"))

    out = harness.send(RawOrder(order_id="o-1", total=21), key="o-1")

    assert list(out) == ["orders.placed"]
    assert out["orders.placed"] == [
        Produced(
            topic="orders.placed",
            key="o-1",
            value=Placed(order_id="o-1", doubled=42),
            key_bytes=b"o-1",
            value_bytes=b'{"order_id":"o-1","doubled":42}',
            headers=[],
        )
    ]


def test_raw_bytes_are_decoded_with_the_input_codec() -> None:
    harness = StageHarness(pipeline.get("validate"))

    out = harness.send(b'{"order_id": "o-2", "total": 5}')

    (produced,) = out["orders.placed"]
    assert produced.value == Placed(order_id="o-2", doubled=10)
    assert produced.key is None


def test_bad_raw_bytes_raise_serialization_error_with_coordinates() -> None:
    harness = StageHarness(pipeline.get("validate"))
    harness.send(RawOrder(order_id="o", total=1))

    with pytest.raises(SerializationError) as raised:
        harness.send(b"not json", partition=3)

    assert (raised.value.topic, raised.value.partition, raised.value.offset) == (
        "orders.raw",
        3,
        0,
    )
    assert raised.value.raw == b"not json"


def test_an_async_handler_works() -> None:
    harness = StageHarness(pipeline.get("validate_async"))

    out = harness.send(RawOrder(order_id="o-3", total=4), key="k")

    (produced,) = out["orders.placed"]
    assert produced.value == Placed(order_id="o-3", doubled=8)
    assert produced.key == "k"


def test_multiple_outputs_are_routed_by_topic() -> None:
    harness = StageHarness(pipeline.get("split"))

    harness.send(RawOrder(order_id="o-0", total=1))
    out = harness.send(RawOrder(order_id="o-4", total=1), key="o-4")

    assert sorted(out) == ["orders.audit", "orders.placed"]
    assert [p.value for p in out["orders.placed"]] == [Placed(order_id="o-4", doubled=0)]
    audit = out["orders.audit"]
    assert [(p.key, p.value, p.headers) for p in audit] == [
        (None, "seen o-4", []),
        ("o-4", "offset 1", [("h", b"1")]),
    ]
    assert audit[0].value_bytes == b"seen o-4"


def test_no_outputs_gives_an_empty_mapping() -> None:
    harness = StageHarness(pipeline.get("split"))

    assert harness.send(RawOrder(order_id="o", total=-1)) == {}


def test_encode_input_uses_the_input_codec() -> None:
    harness = StageHarness(pipeline.get("validate"))

    assert harness.encode_input(RawOrder(order_id="o", total=1)) == b'{"order_id":"o","total":1}'


def test_an_avro_stage_uses_the_in_process_mock_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = {
        "type": "record",
        "name": "Placed",
        "namespace": "unit.harness",
        "fields": [
            {"name": "order_id", "type": "string"},
            {"name": "doubled", "type": "long"},
        ],
    }
    (tmp_path / "orders").mkdir()
    (tmp_path / "orders" / "placed.v1.avsc").write_text(jsonlib.dumps(schema), encoding="utf-8")
    monkeypatch.setenv("STREAMS_SCHEMAS_DIR", str(tmp_path))
    avro_pipeline = Pipeline("avro")
    avro_pipeline.add_stage(
        "validate",
        validate,
        inputs=["orders.raw"],
        input=json(RawOrder),
        outputs={"orders.placed": avro(Placed, "orders/placed.v1.avsc")},
    )

    harness = StageHarness(avro_pipeline.get("validate"))
    out = harness.send(RawOrder(order_id="o-5", total=3), key="o-5")

    (produced,) = out["orders.placed"]
    assert produced.value == Placed(order_id="o-5", doubled=6)
    assert produced.value_bytes is not None
    assert produced.value_bytes[0] == 0
    assert int.from_bytes(produced.value_bytes[1:5], "big") >= 1


# -- process: where a failing record would go ------------------------------------------------

flaky = Pipeline("orders")


@flaky.stage(
    "enrich",
    inputs=["orders.placed"],
    input=json(RawOrder),
    outputs={"orders.priced": json(Placed)},
    retry=RetryPolicy(tiers=(2, 10, 30), max_attempts=3, jitter=0),
)
def enrich(record: Record[RawOrder]) -> Placed:
    if record.value.total > 1000:
        raise DeadLetter("total out of range")
    if record.value.total < 0:
        raise TimeoutError("pricing timed out")
    if record.value.order_id == "wrong-topic":
        return Output(Placed(order_id="x", doubled=0), topic="orders.typo")  # type: ignore[return-value]
    return Placed(order_id=record.value.order_id, doubled=record.value.total * 2)


def test_process_shows_the_outputs_of_a_record_that_succeeds() -> None:
    outcome = StageHarness(flaky.get("enrich")).process(RawOrder(order_id="o", total=2))

    assert outcome.routed is None
    assert outcome.outputs["orders.priced"][0].value == Placed(order_id="o", doubled=4)


def test_process_shows_the_retry_tier_and_attempt_a_failure_would_go_to() -> None:
    harness = StageHarness(flaky.get("enrich"))

    first = harness.process(RawOrder(order_id="o", total=-1), key="o")
    second = harness.process(RawOrder(order_id="o", total=-1), key="o", attempt=2)
    last = harness.process(RawOrder(order_id="o", total=-1), key="o", attempt=3)

    assert first.routed is not None
    assert second.routed is not None
    assert last.routed is not None
    assert (first.routed.topic, first.routed.attempt) == ("orders.enrich.retry.2s", 1)
    assert (second.routed.topic, second.routed.attempt) == ("orders.enrich.retry.10s", 2)
    assert (last.routed.topic, last.routed.reason) == ("orders.enrich.dlq", "retries-exhausted")
    assert isinstance(first.error, TimeoutError)
    assert first.outputs == {}


def test_process_shows_dead_letters_and_bytes_that_do_not_decode() -> None:
    harness = StageHarness(flaky.get("enrich"))

    dead = harness.process(RawOrder(order_id="o", total=5000))
    garbage = harness.process(b"\x00not json")

    assert dead.routed is not None
    assert dead.routed.reason == "dead-letter"
    assert garbage.routed is not None
    assert garbage.routed.topic == "orders.enrich.dlq"
    assert garbage.routed.reason == "deserialization"
    assert garbage.routed.value == b"\x00not json"  # the raw bytes, untouched


def test_process_raises_for_an_output_to_an_undeclared_topic() -> None:
    with pytest.raises(OutputTopicError, match=r"orders\.typo"):
        StageHarness(flaky.get("enrich")).process(RawOrder(order_id="wrong-topic", total=1))
