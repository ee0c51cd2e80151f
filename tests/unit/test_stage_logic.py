"""The pure parts of streams.stage: normalize_outputs and StageSerdes.encode/decode."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from streams.codecs import json, text
from streams.exceptions import OutputTopicError, SerializationError, TopologyError
from streams.pipeline import Pipeline, StageSpec
from streams.record import KeepKey, Output, Record
from streams.stage import StageSerdes, normalize_outputs


class Order(BaseModel):
    order_id: str
    total: int


def handle(record: Record[Any]) -> None:
    return None


def make_spec(outputs: dict[str, Any] | None = None) -> StageSpec:
    return Pipeline("orders").add_stage(
        "validate",
        handle,
        inputs=["orders.raw"],
        input=json(Order),
        outputs=outputs if outputs is not None else {"orders.placed": json(Order)},
    )


def make_record(key: str | None = "o-1") -> Record[Order]:
    return Record(
        value=Order(order_id="o-1", total=5),
        key=key,
        topic="orders.raw",
        partition=1,
        offset=9,
        timestamp_ms=0,
    )


class FakeMessage:
    """The part of confluent_kafka.Message that StageSerdes.decode reads."""

    def __init__(
        self,
        value: bytes | None,
        key: bytes | None = b"o-1",
        headers: list[tuple[str, bytes | None]] | None = None,
    ) -> None:
        self._value, self._key, self._headers = value, key, headers

    def topic(self) -> str:
        return "orders.raw"

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return 17

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_123)


# --- normalize_outputs --------------------------------------------------------------------------


def test_none_means_no_outputs() -> None:
    assert normalize_outputs(None) == []


def test_a_plain_value_becomes_one_output_with_defaults() -> None:
    (output,) = normalize_outputs({"a": 1})

    assert output == Output({"a": 1})
    assert output.key is KeepKey
    assert output.topic is None


def test_an_output_is_kept_as_is() -> None:
    given = Output(b"v", key="k", topic="t")

    assert normalize_outputs(given)[0] is given


def test_a_list_of_mixed_items_becomes_outputs_in_order() -> None:
    given = Output(b"b", topic="t2")

    outputs = normalize_outputs([b"a", given, "c"])

    assert outputs == [Output(b"a"), given, Output("c")]
    assert outputs[1] is given


def test_a_tuple_is_many_outputs_and_an_empty_list_is_none() -> None:
    assert normalize_outputs((b"a", b"b")) == [Output(b"a"), Output(b"b")]
    assert normalize_outputs([]) == []


# --- encode -------------------------------------------------------------------------------------


def test_encode_uses_the_only_output_and_keeps_the_input_key() -> None:
    codecs = StageSerdes(make_spec(), None)

    encoded = codecs.encode(
        Output(Order(order_id="o-2", total=7), headers=[("h", b"1")]), make_record()
    )

    assert encoded.topic == "orders.placed"
    assert encoded.value == b'{"order_id":"o-2","total":7}'
    assert encoded.key == b"o-1"
    assert encoded.headers == [("h", b"1")]


def test_encode_with_an_explicit_none_key_writes_no_key() -> None:
    codecs = StageSerdes(make_spec(), None)

    key = codecs.encode(Output(Order(order_id="o", total=1), key=None), make_record()).key

    assert key is None


def test_encode_with_an_explicit_key_replaces_the_input_key() -> None:
    codecs = StageSerdes(make_spec(), None)

    key = codecs.encode(Output(Order(order_id="o", total=1), key="new"), make_record()).key

    assert key == b"new"


def test_encode_keep_key_of_a_keyless_input_writes_no_key() -> None:
    codecs = StageSerdes(make_spec(), None)

    key = codecs.encode(Output(Order(order_id="o", total=1)), make_record(key=None)).key

    assert key is None


def test_encode_a_none_value_is_a_tombstone() -> None:
    codecs = StageSerdes(make_spec(), None)

    encoded = codecs.encode(Output(None), make_record())

    assert (encoded.topic, encoded.value, encoded.key) == ("orders.placed", None, b"o-1")


def test_encode_to_an_undeclared_topic_is_an_error_of_the_stage_naming_the_topic() -> None:
    codecs = StageSerdes(make_spec({"a": text(), "b": text()}), None)

    with pytest.raises(OutputTopicError, match=r"topic 'c'.*\(declared: a, b\)") as raised:
        codecs.encode(Output("x", topic="c"), make_record())

    # a topology error (exit code 5), not a failure of the record (which would dead-letter it)
    assert isinstance(raised.value, TopologyError)
    assert "outputs=" in raised.value.hint


def test_encode_without_a_topic_when_there_are_several_outputs_stops_the_stage() -> None:
    codecs = StageSerdes(make_spec({"a": text(), "b": text()}), None)

    with pytest.raises(OutputTopicError, match="has 2 output topics") as raised:
        codecs.encode(Output("x"), make_record())

    assert "topic=" in raised.value.hint


def test_encode_routes_to_the_named_topic_with_its_codec() -> None:
    codecs = StageSerdes(make_spec({"a": text(), "b": json(Order)}), None)

    first = codecs.encode(Output("x", topic="a"), make_record())
    assert (first.topic, first.value) == ("a", b"x")
    encoded = codecs.encode(Output(Order(order_id="z", total=0), topic="b"), make_record())
    assert (encoded.topic, encoded.value) == ("b", b'{"order_id":"z","total":0}')


# --- decode -------------------------------------------------------------------------------------


def test_decode_builds_a_record() -> None:
    codecs = StageSerdes(make_spec(), None)
    message = FakeMessage(b'{"order_id":"o-9","total":3}', headers=[("a", b"1"), ("b", None)])

    record = codecs.decode(message)

    assert record == Record(
        value=Order(order_id="o-9", total=3),
        key="o-1",
        topic="orders.raw",
        partition=2,
        offset=17,
        timestamp_ms=1_700_000_000_123,
        headers=(("a", b"1"), ("b", None)),  # a null header value stays null
    )


def test_decode_a_keyless_message_without_headers() -> None:
    codecs = StageSerdes(make_spec(), None)

    record = codecs.decode(FakeMessage(b'{"order_id":"o","total":1}', key=None))

    assert record.key is None
    assert record.headers == ()


def test_decode_a_null_value_raises_serialization_error_with_coordinates() -> None:
    codecs = StageSerdes(make_spec(), None)

    with pytest.raises(SerializationError, match="null") as raised:
        codecs.decode(FakeMessage(None))

    error = raised.value
    assert (error.topic, error.partition, error.offset) == ("orders.raw", 2, 17)
    assert error.raw is None


def test_decode_a_bad_value_raises_serialization_error_with_raw_bytes_and_coordinates() -> None:
    codecs = StageSerdes(make_spec(), None)

    with pytest.raises(SerializationError, match="not a valid Order") as raised:
        codecs.decode(FakeMessage(b'{"order_id": 1}'))

    error = raised.value
    assert (error.topic, error.partition, error.offset) == ("orders.raw", 2, 17)
    assert error.raw == b'{"order_id": 1}'


def test_decode_a_bad_key_raises_serialization_error_with_the_value_bytes() -> None:
    codecs = StageSerdes(make_spec(), None)
    value = b'{"order_id":"o","total":1}'

    with pytest.raises(SerializationError, match="UTF-8") as raised:
        codecs.decode(FakeMessage(value, key=b"\xff\xfe"))

    assert raised.value.offset == 17
    assert raised.value.raw == value
