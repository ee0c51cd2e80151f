"""Where a failed record goes (RetryPolicy.decide, streams.stage.routing), without a broker."""

from __future__ import annotations

import random

import pytest
from pydantic import BaseModel, ValidationError

from streams import headers
from streams.exceptions import DeadLetter, OutputRejectedError, RetryLater, SerializationError
from streams.ordering import Waiting
from streams.retry import RetryPolicy, tier_label
from streams.stage.routing import park, repark, route

GROUP = "orders.enrich"
NOW = 1_700_000_000_000


class FakeMessage:
    """The part of confluent_kafka.Message that routing reads."""

    def __init__(
        self,
        value: bytes | None = b"v",
        *,
        key: bytes | None = b"k",
        topic: str = "orders.placed",
        partition: int = 2,
        offset: int = 40,
        found: list[tuple[str, bytes | None]] | None = None,
    ) -> None:
        self._value, self._key = value, key
        self._topic, self._partition, self._offset = topic, partition, offset
        self._headers = found

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, NOW - 5000)


def policy(**kw: object) -> RetryPolicy:
    return RetryPolicy(tiers=(2.0, 10.0, 30.0), jitter=0.0, **kw)  # type: ignore[arg-type]


class Model(BaseModel):
    n: int


def a_validation_error() -> ValidationError:
    try:
        Model.model_validate({"n": "x"})
    except ValidationError as error:
        return error
    raise AssertionError


# -- RetryPolicy.decide ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (DeadLetter("bad sku"), "dead-letter"),
        (SerializationError("garbage"), "deserialization"),
        (a_validation_error(), "validation"),
        (ValueError("boom"), "handler"),
    ],
)
def test_what_cannot_succeed_goes_to_the_dlq_at_once(error: BaseException, reason: str) -> None:
    decision = policy().decide(GROUP, error, attempts_so_far=1, now_ms=NOW)

    assert (decision.topic, decision.due_ms, decision.reason) == (f"{GROUP}.dlq", None, reason)


def test_retryable_errors_climb_the_tiers_then_run_out() -> None:
    chosen = [
        policy().decide(GROUP, TimeoutError(), attempts_so_far=n, now_ms=NOW) for n in (1, 2, 3, 4)
    ]

    assert [d.topic for d in chosen] == [
        f"{GROUP}.retry.2s",
        f"{GROUP}.retry.10s",
        f"{GROUP}.retry.30s",
        f"{GROUP}.dlq",
    ]
    assert [d.due_ms for d in chosen[:3]] == [NOW + 2000, NOW + 10_000, NOW + 30_000]
    assert chosen[3].reason == "retries-exhausted"


def test_jitter_only_lengthens_the_delay() -> None:
    jittery = RetryPolicy(tiers=(5.0,), jitter=0.5, rng=random.Random(7))

    dues = [
        jittery.decide(GROUP, ConnectionError(), attempts_so_far=1, now_ms=NOW).due_ms
        for _ in range(200)
    ]

    assert all(due is not None and NOW + 5000 <= due <= NOW + 7500 for due in dues)
    assert len(set(dues)) > 1, "control: the jitter does spread the due times"


def test_retry_later_picks_the_first_tier_at_or_above_the_delay_asked() -> None:
    decision = policy().decide(GROUP, RetryLater(delay_s=5), attempts_so_far=1, now_ms=NOW)

    assert decision.topic == f"{GROUP}.retry.10s"
    assert decision.due_ms == NOW + 10_000
    assert decision.hold_until_ms is None


def test_retry_later_longer_than_the_longest_tier_is_held_until_its_delay() -> None:
    """The regression: RetryLater(60) with a 30 s longest tier used to retry after 30 s."""
    decision = policy().decide(GROUP, RetryLater(delay_s=60), attempts_so_far=1, now_ms=NOW)

    assert decision.topic == f"{GROUP}.retry.30s"
    assert decision.hold_until_ms == NOW + 60_000


# -- route -------------------------------------------------------------------------------------


def test_a_first_failure_carries_the_original_coordinates_and_no_stack_on_retry() -> None:
    routed = route(
        FakeMessage(found=[("trace", b"t-1")]),
        TimeoutError("slow"),
        group_id=GROUP,
        policy=policy(),
        now_ms=NOW,
    )

    assert (routed.topic, routed.key, routed.value, routed.attempt) == (
        f"{GROUP}.retry.2s",
        b"k",
        b"v",
        1,
    )
    found = dict(routed.headers)
    assert found["trace"] == b"t-1"  # the record's own headers are kept
    assert found[headers.ORIGINAL_TOPIC] == b"orders.placed"
    assert found[headers.ORIGINAL_PARTITION] == b"2"
    assert found[headers.ORIGINAL_OFFSET] == b"40"
    assert found[headers.ORIGINAL_TIMESTAMP] == str(NOW - 5000).encode()
    assert found[headers.ATTEMPT] == b"1"
    assert found[headers.FIRST_FAILURE_MS] == str(NOW).encode()
    assert found[headers.DUE_MS] == str(NOW + 2000).encode()
    assert found[headers.ERROR_REASON] == b"retry"
    assert found[headers.ERROR_CLASS] == b"builtins.TimeoutError"
    assert headers.ERROR_STACK not in found


def test_a_retried_record_keeps_where_it_entered_and_counts_the_attempt() -> None:
    earlier = route(FakeMessage(), TimeoutError(), group_id=GROUP, policy=policy(), now_ms=NOW)
    read_back = FakeMessage(topic=f"{GROUP}.retry.2s", partition=0, offset=7, found=earlier.headers)

    again = route(read_back, ValueError("bad"), group_id=GROUP, policy=policy(), now_ms=NOW + 3000)

    found = dict(again.headers)
    assert again.topic == f"{GROUP}.dlq"
    assert again.attempt == 2
    assert found[headers.ORIGINAL_TOPIC] == b"orders.placed"  # not the retry topic
    assert found[headers.ORIGINAL_OFFSET] == b"40"
    assert found[headers.FIRST_FAILURE_MS] == str(NOW).encode()  # the first failure's time
    assert found[headers.ERROR_REASON] == b"handler"
    assert headers.ERROR_STACK in found  # the DLQ record carries the stack
    assert [name for name, _ in again.headers].count(headers.ATTEMPT) == 1


def test_an_output_the_broker_refuses_is_dead_lettered_as_output_rejected() -> None:
    routed = route(
        FakeMessage(),
        OutputRejectedError("output to x is 2000000 bytes"),
        group_id=GROUP,
        policy=policy(),
        now_ms=NOW,
    )

    assert routed.to_dlq
    assert dict(routed.headers)[headers.ERROR_REASON] == b"output-rejected"


def test_a_long_retry_later_carries_its_hold_time_and_is_reparked_until_then() -> None:
    routed = route(
        FakeMessage(), RetryLater(delay_s=60), group_id=GROUP, policy=policy(), now_ms=NOW
    )
    assert dict(routed.headers)[headers.HOLD_UNTIL_MS] == str(NOW + 60_000).encode()

    read_back = FakeMessage(topic=f"{GROUP}.retry.30s", partition=1, found=routed.headers)
    once = repark(read_back, topic=f"{GROUP}.retry.30s", tier_s=30.0, now_ms=NOW + 30_000)
    twice = repark(read_back, topic=f"{GROUP}.retry.30s", tier_s=30.0, now_ms=NOW + 50_000)

    # never due before the hold time, and never later than one tier from now
    assert once.due_ms == NOW + 60_000
    assert twice.due_ms == NOW + 60_000
    short = repark(read_back, topic=f"{GROUP}.retry.30s", tier_s=10.0, now_ms=NOW + 30_000)
    assert short.due_ms == NOW + 40_000
    found = dict(once.headers)
    assert found[headers.ATTEMPT] == b"1"  # a re-park is no attempt
    assert [n for n, _ in once.headers].count(headers.DUE_MS) == 1
    assert once.partition == 1  # it stays on its partition


def test_park_puts_a_record_behind_the_head_of_its_key_untried() -> None:
    head = Waiting(original_offset=12, topic=f"{GROUP}.retry.10s", due_ms=NOW + 9000)

    parked = park(
        FakeMessage(offset=15),
        group_id=GROUP,
        head=head,
        head_key=("orders.placed", 2, b"k"),
    )

    assert (parked.topic, parked.partition, parked.due_ms) == (head.topic, 2, head.due_ms)
    found = dict(parked.headers)
    assert found[headers.PARKED_BEHIND] == b"orders.placed/2@12"
    assert headers.ATTEMPT not in found  # it was never tried
    assert headers.ERROR_REASON not in found


def test_tier_labels() -> None:
    assert [tier_label(s) for s in (5, 30, 300, 3600, 1.5)] == ["5s", "30s", "5m", "1h", "1500ms"]
