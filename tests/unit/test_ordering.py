"""The key-order ledger (pure logic) and the checks a key-ordered stage gets at declaration."""

from __future__ import annotations

import pytest

from streams.exceptions import TopologyError
from streams.ordering import KeyOrderLedger, Waiting
from streams.pipeline import Pipeline
from streams.record import Record
from streams.retry import RetryPolicy

K = ("orders", 0, b"k1")
OTHER = ("orders", 0, b"k2")


def test_a_key_with_nothing_waiting_has_no_head_and_any_record_is_head() -> None:
    ledger = KeyOrderLedger()
    assert ledger.head(K) is None
    assert ledger.is_head(K, 5)


def test_the_head_is_the_earliest_original_offset_whatever_the_order_of_arrival() -> None:
    ledger = KeyOrderLedger()
    ledger.wait(K, Waiting(12, "s.retry.30s", 2_000))
    ledger.wait(K, Waiting(10, "s.retry.5s", 1_000))
    head = ledger.head(K)
    assert head == Waiting(10, "s.retry.5s", 1_000)
    assert ledger.is_head(K, 10)
    assert not ledger.is_head(K, 12)
    assert not ledger.is_head(K, 15), "a later record of the key waits behind the head"


def test_moving_the_head_to_a_later_tier_keeps_it_the_head() -> None:
    ledger = KeyOrderLedger()
    ledger.wait(K, Waiting(10, "s.retry.5s", 1_000))
    ledger.wait(K, Waiting(11, "s.retry.5s", 1_000))
    ledger.wait(K, Waiting(10, "s.retry.30s", 9_000))
    assert ledger.head(K) == Waiting(10, "s.retry.30s", 9_000)
    assert len(ledger) == 2


def test_done_hands_the_head_to_the_next_record_and_forgets_an_empty_key() -> None:
    ledger = KeyOrderLedger()
    ledger.wait(K, Waiting(10, "s.retry.5s", 1_000))
    ledger.wait(K, Waiting(11, "s.retry.5s", 1_000))
    ledger.done(K, 10)
    assert ledger.is_head(K, 11)
    ledger.done(K, 11)
    assert ledger.head(K) is None
    assert len(ledger) == 0
    ledger.done(K, 11)  # twice: no error


def test_keys_are_independent() -> None:
    ledger = KeyOrderLedger()
    ledger.wait(K, Waiting(10, "s.retry.5s", 1_000))
    assert ledger.is_head(OTHER, 11)
    assert not ledger.is_head(K, 11)


def test_dropping_partitions_forgets_only_their_keys() -> None:
    ledger = KeyOrderLedger()
    ledger.wait(K, Waiting(10, "s.retry.5s", 1_000))
    ledger.wait(("orders", 1, b"k1"), Waiting(3, "s.retry.5s", 1_000))
    ledger.drop_partitions({0})
    assert ledger.head(K) is None
    assert ledger.head(("orders", 1, b"k1")) is not None


def test_a_key_ordered_stage_refuses_an_async_handler() -> None:
    pipeline = Pipeline("ordered")

    async def handler(record: Record[bytes]) -> bytes:
        return record.value

    with pytest.raises(TopologyError, match="key-ordered retries need a plain"):
        pipeline.add_stage(
            "s", handler, inputs=["a"], outputs=["b"], retry=RetryPolicy(key_ordered=True)
        )
