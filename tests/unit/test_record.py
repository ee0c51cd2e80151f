"""Record (header lookup, coordinates) and Output defaults."""

from __future__ import annotations

import dataclasses

import pytest

from streams.record import KeepKey, Output, Record


def make_record(headers: tuple[tuple[str, bytes], ...] = ()) -> Record[str]:
    return Record(
        value="v",
        key="k",
        topic="orders.raw",
        partition=2,
        offset=41,
        timestamp_ms=1_700_000_000_000,
        headers=headers,
    )


def test_header_returns_the_last_value_of_a_repeated_name() -> None:
    record = make_record((("trace", b"first"), ("other", b"x"), ("trace", b"last")))

    assert record.header("trace") == b"last"
    assert record.header("other") == b"x"


def test_header_is_none_when_absent() -> None:
    assert make_record((("trace", b"a"),)).header("missing") is None
    assert make_record().header("trace") is None


def test_header_names_are_case_sensitive() -> None:
    assert make_record((("Trace", b"a"),)).header("trace") is None


def test_coordinates_name_topic_partition_and_offset() -> None:
    assert make_record().coordinates == "orders.raw/2@41"


def test_record_is_frozen() -> None:
    record = make_record()

    with pytest.raises(dataclasses.FrozenInstanceError):
        record.value = "other"  # type: ignore[misc]


def test_output_defaults_keep_the_key_and_name_no_topic() -> None:
    output = Output("value")

    assert output.key is KeepKey
    assert output.topic is None
    assert output.headers == ()


def test_an_explicit_none_key_is_not_keep_key() -> None:
    output = Output("value", key=None, topic="t", headers=[("h", b"1")])

    assert output.key is None
    assert output.topic == "t"
    assert list(output.headers) == [("h", b"1")]


def test_idempotency_key_is_the_original_coordinates_across_retries() -> None:
    first = Record(value=b"v", key="k", topic="orders", partition=2, offset=41, timestamp_ms=0)
    retried = Record(
        value=b"v",
        key="k",
        topic="orders.validate.retry.5s",
        partition=0,
        offset=7,
        timestamp_ms=0,
        headers=(
            ("streams.original.topic", b"orders"),
            ("streams.original.partition", b"2"),
            ("streams.original.offset", b"41"),
        ),
    )
    assert first.idempotency_key == "orders/2@41"
    assert retried.idempotency_key == first.idempotency_key
    other = Record(value=b"v", key="k", topic="orders", partition=2, offset=42, timestamp_ms=0)
    assert other.idempotency_key != first.idempotency_key
