"""DLQ records in three header formats, and the headers a redrive writes (replay.letters)."""

from __future__ import annotations

import pytest
from confluent_kafka import Message

from streams import headers as h
from streams.kafka.messages import message_headers
from streams.replay.letters import (
    HeaderRewriter,
    copied_headers,
    escaped,
    read_letter,
    redriven_headers,
)
from tests.unit.replay.fakes import DLQ, NOW, FakeMessage, connect, ours, spring


def test_our_format_names_the_original_coordinates_reason_and_class() -> None:
    letter = read_letter(FakeMessage(found=ours(count=2)))
    assert letter.format == "streams"
    assert letter.original == ("orders.placed", 2, 40)
    assert letter.original_timestamp_ms == NOW - 60_000
    assert letter.reason == "retries-exhausted"
    assert letter.error_class == "streams.exceptions.DependencyUnavailable"
    assert letter.redrives == 2
    assert not letter.truncated
    assert letter.coordinates == f"{DLQ}/1@7"


def test_spring_format_reads_binary_partition_offset_and_timestamp() -> None:
    letter = read_letter(FakeMessage(found=spring(partition=3, offset=1234)))
    assert letter.format == "spring"
    assert letter.original == ("payments", 3, 1234)
    assert letter.original_timestamp_ms == NOW - 1000
    assert letter.reason == "spring"
    assert letter.error_class == "java.lang.IllegalStateException"


def test_spring_headers_written_as_decimal_text_are_read_too() -> None:
    found = [
        ("kafka_dlt-original-topic", b"payments"),
        ("kafka_dlt-original-partition", b"4"),
        ("kafka_dlt-original-offset", b"17"),
    ]
    assert read_letter(FakeMessage(found=found)).original == ("payments", 4, 17)


def test_connect_format_reads_decimal_coordinates_and_the_stage_as_reason() -> None:
    letter = read_letter(FakeMessage(found=connect()))
    assert letter.format == "connect"
    assert letter.original == ("crm.contacts", 0, 99)
    assert letter.reason == "value_converter"
    assert letter.error_class == "org.apache.kafka.connect.errors.DataException"


@pytest.mark.parametrize(
    "found",
    [
        [],
        [("unrelated", b"1")],
        [
            (h.ORIGINAL_TOPIC, b"orders.placed"),
            (h.ORIGINAL_PARTITION, b"abc"),
            (h.ORIGINAL_OFFSET, b"1"),
        ],
        [
            (h.ORIGINAL_TOPIC, b"bad topic!"),
            (h.ORIGINAL_PARTITION, b"0"),
            (h.ORIGINAL_OFFSET, b"1"),
        ],
        [(h.ORIGINAL_TOPIC, b"\xff\xfe"), (h.ORIGINAL_PARTITION, b"0"), (h.ORIGINAL_OFFSET, b"1")],
        [(h.ORIGINAL_TOPIC, b"t"), (h.ORIGINAL_PARTITION, b"-1"), (h.ORIGINAL_OFFSET, b"1")],
        [("kafka_dlt-original-topic", b"t"), ("kafka_dlt-original-partition", b"\x00\x01")],
        [(h.ERROR_REASON, b"handler")],  # ours, but no coordinates at all
    ],
    ids=[
        "none",
        "other",
        "bad-partition",
        "bad-topic",
        "garbage-bytes",
        "negative",
        "spring-short",
        "reason-only",
    ],
)
def test_missing_or_garbage_coordinates_make_a_record_unroutable(
    found: list[tuple[str, bytes]],
) -> None:
    assert read_letter(FakeMessage(found=found or None)).original is None


def test_redriven_headers_keep_the_records_own_headers_in_order_with_duplicates() -> None:
    extra = [("trace", b"t1"), ("tenant", b"acme"), ("trace", b"t2")]
    letter = read_letter(FakeMessage(found=ours(extra=extra, reason="handler")))
    found = redriven_headers(letter, task_id="redrive-x", count=1)
    names = [name for name, _ in found]
    assert found[:3] == extra  # own headers first, in order, duplicates kept
    assert [n for n in names if n.startswith(h.ORIGINAL_PREFIX)] == [
        h.ORIGINAL_TOPIC,
        h.ORIGINAL_PARTITION,
        h.ORIGINAL_OFFSET,
        h.ORIGINAL_TIMESTAMP,
    ]
    for gone in (
        h.ERROR_REASON,
        h.ERROR_CLASS,
        h.ERROR_MESSAGE,
        h.ERROR_STACK,
        h.ATTEMPT,
        h.DUE_MS,
        h.STAGE,
        h.FIRST_FAILURE_MS,
    ):
        assert gone not in names
    assert found[-4:] == [
        (h.REPLAYED, b"redrive-x"),
        (h.REPLAY_SOURCE, f"{DLQ}/1@7".encode()),
        (h.REPLAY_COUNT, b"1"),
        (h.REPLAY_PRIOR_REASON, b"handler"),
    ]


def test_redriven_headers_replace_an_earlier_redrives_provenance() -> None:
    letter = read_letter(FakeMessage(found=ours(count=1)))
    found = redriven_headers(letter, task_id="redrive-new", count=2)
    assert h.get(found, h.REPLAYED) == b"redrive-new"
    assert [n for n, _ in found].count(h.REPLAYED) == 1
    assert h.get(found, h.REPLAY_COUNT) == b"2"


def test_redriven_headers_of_foreign_records_drop_their_error_headers_and_add_ours() -> None:
    letter = read_letter(FakeMessage(found=spring(partition=3, offset=1234)))
    found = redriven_headers(letter, task_id="t", count=1)
    assert not any(n.startswith("kafka_dlt-") for n, _ in found)
    assert found[0] == ("traceparent", b"00-abc-def-01")
    assert h.original_coordinates(found) == ("payments", 3, 1234)
    assert h.get(found, h.ORIGINAL_TIMESTAMP) == str(NOW - 1000).encode()
    connected = redriven_headers(read_letter(FakeMessage(found=connect())), task_id="t", count=1)
    assert not any(n.startswith("__connect.errors.") for n, _ in connected)
    assert h.original_coordinates(connected) == ("crm.contacts", 0, 99)


def test_redriven_headers_drop_what_the_operator_names() -> None:
    letter = read_letter(FakeMessage(found=ours(extra=[("x-replicated-from", b"us-east")])))
    found = redriven_headers(letter, task_id="t", count=1, drop=["x-replicated-from"])
    assert "x-replicated-from" not in [n for n, _ in found]


def test_copied_headers_keep_every_header_and_add_provenance() -> None:
    own = [("a", b"1"), (h.REPLAYED, b"older"), ("a", b"2")]
    found = copied_headers(own, task_id="copy-1", source="t/0@5")
    assert found == [*own, (h.REPLAYED, b"copy-1"), (h.REPLAY_SOURCE, b"t/0@5")]


def test_truncated_records_are_flagged() -> None:
    found = [*ours(reason="unroutable"), (h.TRUNCATED, b"9000000")]
    assert read_letter(FakeMessage(found=found)).truncated


def test_escaped_shows_utf8_and_escapes_other_bytes() -> None:
    assert escaped(b"caf\xc3\xa9 \x00\xff") == "café \\x00\\xff"
    assert escaped(None) is None


def test_carried_headers_keep_provenance_through_retries() -> None:
    """A redriven record that fails again reaches the DLQ with its count (the loop guard)."""
    found = [
        ("own", b"1"),
        (h.ORIGINAL_TOPIC, b"t"),
        (h.REPLAYED, b"r"),
        (h.REPLAY_COUNT, b"2"),
        (h.ERROR_REASON, b"x"),
        (h.ATTEMPT, b"3"),
    ]
    kept = h.without_ours(found, keep_original=True)
    assert kept == [
        ("own", b"1"),
        (h.ORIGINAL_TOPIC, b"t"),
        (h.REPLAYED, b"r"),
        (h.REPLAY_COUNT, b"2"),
    ]
    assert h.without_ours(found, keep_original=False) == [("own", b"1")]


TRACES = [("trace", b"t1"), ("trace", b"t2")]


def test_a_client_message_reads_as_the_same_letter_as_any_message_like_object() -> None:
    # confluent_kafka.Message takes a fast path (its header list is copied, not converted)
    found: list[tuple[str, bytes | None]] = [("nil", None), *ours(count=1, extra=TRACES)]
    wire: list[tuple[str, str | bytes | None]] = list(found)
    real = Message(
        topic=DLQ, partition=1, offset=7, key=b"k", value=b"v", headers=wire, timestamp=(1, NOW)
    )
    letter = read_letter(real)
    assert letter == read_letter(FakeMessage(found=found))
    assert letter.headers == tuple(found)  # order, duplicates and the null value kept
    assert message_headers(real) == tuple(found)


def test_redriven_headers_are_the_same_from_a_task_rewriter() -> None:
    letter = read_letter(FakeMessage(found=spring()))
    rewrite = HeaderRewriter("t", ["traceparent"])
    assert rewrite(letter, 2) == redriven_headers(
        letter, task_id="t", count=2, drop=["traceparent"]
    )
    assert rewrite(letter, 2) == rewrite(letter, 2)  # the memo of kept names changes nothing
