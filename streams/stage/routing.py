"""Where a failed record goes, and exactly what is written there. Pure: no broker, no clock.

``route`` turns (the message, the error, the stage's retry policy, now) into a ``Routed``
record: the retry tier or the dead-letter topic, the key and value bytes untouched, and the
headers of the contract (``streams.headers``). The stage's runner produces it in the open
transaction; ``streams.testing.StageHarness`` shows it without producing.

A retry record is due at ``now + tier delay`` (jitter only lengthens). ``RetryLater(delay_s)``
promises *at least* that delay: when it asks for more than the longest tier, the record goes
to the longest tier and also carries ``streams.hold.until.ms``; read back before that time, it
is *re-parked* (``repark``) in the longest tier, without counting an attempt, until it is due.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from streams import headers
from streams.exceptions import OutputRejectedError
from streams.kafka.limits import record_size
from streams.kafka.messages import MessageLike, carried_headers, message_headers, origin_of
from streams.ordering import Waiting
from streams.retry import RetryDecision, RetryPolicy

__all__ = ["Routed", "park", "repark", "route", "unroutable"]


@dataclass(frozen=True, slots=True)
class Routed:
    """A record to write to a retry tier or the DLQ: the destination and every byte of it."""

    topic: str
    partition: int | None  # None lets the partitioner choose (by key)
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    reason: str  # "retry", "parked", "reparked", or the DLQ reason
    due_ms: int | None  # None: the dead-letter topic
    attempt: int

    @property
    def to_dlq(self) -> bool:
        return self.due_ms is None

    @property
    def size(self) -> int:
        """Its size on the wire, as the destination topic's limit counts it (an estimate)."""
        return record_size(self.key, self.value, self.headers)

    def on_partition(self, partition: int | None) -> Routed:
        return replace(self, partition=partition)


def route(
    message: MessageLike,
    error: BaseException,
    *,
    group_id: str,
    policy: RetryPolicy,
    now_ms: int,
    reason: str | None = None,
) -> Routed:
    """The retry or dead-letter record for ``message``, which failed with ``error``.

    ``reason`` overrides the DLQ reason the policy gives (``output-rejected``,
    ``unroutable``); a retry record's reason is always ``retry``.
    """
    original = message_headers(message)
    attempts = (headers.get_int(original, headers.ATTEMPT) or 0) + 1
    decision = policy.decide(group_id, error, attempts_so_far=attempts, now_ms=now_ms)
    if reason is None:
        reason = "output-rejected" if isinstance(error, OutputRejectedError) else decision.reason
    to_retry = decision.due_ms is not None
    first_failure = headers.get_int(original, headers.FIRST_FAILURE_MS) or now_ms
    routed = carried_headers(message, original)
    routed += [
        (headers.STAGE, group_id.encode()),
        (headers.ATTEMPT, str(attempts).encode()),
        (headers.FIRST_FAILURE_MS, str(first_failure).encode()),
    ]
    if decision.due_ms is not None:
        routed.append((headers.DUE_MS, str(decision.due_ms).encode()))
    if decision.hold_until_ms is not None:
        routed.append((headers.HOLD_UNTIL_MS, str(decision.hold_until_ms).encode()))
    # the stack only where someone reads it: formatting it per retry cost as much as routing
    routed += headers.error_headers(error, "retry" if to_retry else reason, with_stack=not to_retry)
    return Routed(
        topic=decision.topic,
        partition=None,
        key=message.key(),
        value=message.value(),
        headers=routed,
        reason="retry" if to_retry else reason,
        due_ms=decision.due_ms,
        attempt=attempts,
    )


def decision_of(routed: Routed) -> RetryDecision:
    """The policy's decision a ``Routed`` record carries out (for the key-order ledger)."""
    return RetryDecision(routed.topic, routed.due_ms, routed.reason)


def park(
    message: MessageLike, *, group_id: str, head: Waiting, head_key: tuple[str, int, bytes]
) -> Routed:
    """Key-ordered retries: ``message`` waits, untried, behind ``head`` (its key's earliest).

    It goes untouched to the retry topic and partition where the head waits, due when the head
    is, so it is read again right after it. Parking is no attempt: attempt and first-failure
    headers are carried as they were.
    """
    original = message_headers(message)
    routed = carried_headers(message, original)
    for name in (headers.ATTEMPT, headers.FIRST_FAILURE_MS):
        kept = headers.get(original, name)
        if kept is not None:
            routed.append((name, kept))
    topic, partition, _key = head_key
    routed += [
        (headers.STAGE, group_id.encode()),
        (headers.DUE_MS, str(head.due_ms).encode()),
        (headers.PARKED_BEHIND, f"{topic}/{partition}@{head.original_offset}".encode()),
    ]
    return Routed(
        topic=head.topic,
        partition=partition,
        key=message.key(),
        value=message.value(),
        headers=routed,
        reason="parked",
        due_ms=head.due_ms,
        attempt=headers.get_int(original, headers.ATTEMPT) or 0,
    )


def hold_until(message: MessageLike) -> int | None:
    """``streams.hold.until.ms`` of a retry record, if it carries one."""
    return headers.get_int(message_headers(message), headers.HOLD_UNTIL_MS)


def repark(message: MessageLike, *, topic: str, tier_s: float, now_ms: int) -> Routed:
    """Write a retry record that is not due yet back to ``topic`` (the longest tier).

    Due at ``now + tier`` or at its hold time, whichever is first: records of one tier stay in
    due order, so holding this one never holds back a later, earlier-due record. Everything
    else, the attempt count included, is kept as it is.
    """
    original = message_headers(message)
    until = headers.get_int(original, headers.HOLD_UNTIL_MS) or now_ms
    due = min(until, now_ms + round(1000 * tier_s))
    kept = [(name, value) for name, value in original if name != headers.DUE_MS]
    kept.append((headers.DUE_MS, str(due).encode()))
    return Routed(
        topic=topic,
        partition=origin_of(message)[1],  # the same partition: the record stays in its place
        key=message.key(),
        value=message.value(),
        headers=kept,
        reason="reparked",
        due_ms=due,
        attempt=headers.get_int(original, headers.ATTEMPT) or 0,
    )


def unroutable(
    message: MessageLike,
    *,
    group_id: str,
    dlq_topic: str,
    limit: int,
    why: str,
    now_ms: int,
) -> Routed | None:
    """A bounded dead-letter record for a record that no retry can ever write where it goes.

    Too large for the producer or the topic, invalid, or not authorised: the record goes to
    the DLQ with reason ``unroutable``, its original coordinates, and as much of its value as
    fits in ``limit`` bytes (``streams.truncated`` then holds the original length; the whole
    record stays readable in its input topic until retention). If even the key and our own
    headers do not fit, the record's own headers and then its key are left out. None when
    nothing fits: the caller must stop rather than loop.
    """
    original = message_headers(message)
    attempts = (headers.get_int(original, headers.ATTEMPT) or 0) + 1
    ours = [
        (headers.STAGE, group_id.encode()),
        (headers.ATTEMPT, str(attempts).encode()),
        (
            headers.FIRST_FAILURE_MS,
            str(headers.get_int(original, headers.FIRST_FAILURE_MS) or now_ms).encode(),
        ),
        (headers.ERROR_REASON, b"unroutable"),
        (headers.ERROR_CLASS, b"streams.exceptions.OutputRejectedError"),
        (headers.ERROR_MESSAGE, headers.truncate(why, headers.MAX_MESSAGE_BYTES)),
    ]
    carried = carried_headers(message, original)
    value = message.value() or b""
    key = message.key()
    originals = [(n, v) for n, v in carried if n.startswith("streams.original.")]
    for kept_headers, kept_key in ((carried, key), (originals, key), (originals, None)):
        found = [*kept_headers, *ours, (headers.TRUNCATED, str(len(value)).encode())]
        room = limit - record_size(kept_key, b"", found)
        if room < 0:
            continue
        if len(value) <= room:  # it fits whole after all: no truncation flag
            found = [*kept_headers, *ours]
        return Routed(
            topic=dlq_topic,
            partition=None,
            key=kept_key,
            value=None if message.value() is None else value[:room],
            headers=found,
            reason="unroutable",
            due_ms=None,
            attempt=attempts,
        )
    return None
