"""Retry policy of a stage: delay tiers, attempts, jitter, and which failures are retryable.

A failed record is written to the retry topic of its next tier, ``P.S.retry.<delay>``, inside
the same transaction that consumes it; the stage reads its own retry topics and does not
process a record before its due time (it pauses that partition instead of sleeping). When the
attempts run out the record goes to the dead-letter topic ``P.S.dlq``.

Defaults, as users of such tools expect: tiers 5 s, 30 s, 5 min; 4 attempts in all (the first
try and three retries); 10 % jitter; retryable are ``RetryLater`` (and so
``DependencyUnavailable``), timeouts and connection errors, and a schema registry that does not
answer while a record is decoded (``RegistryUnavailableError``). Validation and deserialization
errors and ``DeadLetter`` go to the dead-letter topic at once.

``key_ordered=True`` keeps per-key order through retries: see ``streams.ordering``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from streams.exceptions import (
    DeadLetter,
    RegistryUnavailableError,
    RetryLater,
    SerializationError,
    TopologyError,
)

__all__ = ["RetryDecision", "RetryPolicy", "tier_label"]

_DEFAULT_TIERS = (5.0, 30.0, 300.0)
_DEFAULT_RETRYABLE: tuple[type[BaseException], ...] = (RetryLater, TimeoutError, ConnectionError)
_NEVER_RETRYABLE: tuple[type[BaseException], ...] = (
    DeadLetter,
    SerializationError,
    ValidationError,
)


def tier_label(delay_s: float) -> str:
    """5 -> '5s', 30 -> '30s', 300 -> '5m', 3600 -> '1h', 1.5 -> '1500ms'."""
    if delay_s <= 0:
        raise TopologyError("retry delays must be positive")
    if delay_s < 1 or delay_s != int(delay_s):
        return f"{round(delay_s * 1000)}ms"
    seconds = int(delay_s)
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


@dataclass(frozen=True)
class RetryDecision:
    """Where a failed record goes: a retry tier (topic, due time) or the DLQ (reason).

    ``hold_until_ms``: a ``RetryLater`` asked for a longer delay than the longest tier; the
    record is re-parked in that tier until then (``streams.stage.routing.repark``).
    """

    topic: str
    due_ms: int | None
    reason: str
    hold_until_ms: int | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """How a stage retries. ``tiers``: delays in seconds, one retry topic each, ascending."""

    tiers: Sequence[float] = _DEFAULT_TIERS
    max_attempts: int = 4
    jitter: float = 0.1
    retryable: tuple[type[BaseException], ...] = _DEFAULT_RETRYABLE
    # later records of a key wait behind the record of that key in retry (streams/ordering.py)
    key_ordered: bool = False
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.tiers and self.max_attempts > 1:
            raise TopologyError("a retry policy with attempts > 1 needs at least one delay tier")
        if list(self.tiers) != sorted(self.tiers):
            raise TopologyError(f"retry tiers must ascend, got {list(self.tiers)}")
        if self.max_attempts < 1:
            raise TopologyError("max_attempts must be at least 1")
        if not 0 <= self.jitter < 1:
            raise TopologyError("jitter is a fraction in [0, 1)")
        labels = [tier_label(t) for t in self.tiers]
        if len(set(labels)) != len(labels):
            raise TopologyError(f"two retry tiers have the same name: {labels}")

    def retry_topics(self, group_id: str) -> list[str]:
        return [f"{group_id}.retry.{tier_label(t)}" for t in self.tiers]

    @staticmethod
    def dlq_topic(group_id: str) -> str:
        return f"{group_id}.dlq"

    def is_retryable(self, error: BaseException) -> bool:
        if isinstance(error, RegistryUnavailableError):
            return True  # the record is fine; the registry is down for now
        if isinstance(error, _NEVER_RETRYABLE):
            return False
        return isinstance(error, self.retryable)

    def decide(
        self, group_id: str, error: BaseException, *, attempts_so_far: int, now_ms: int
    ) -> RetryDecision:
        """``attempts_so_far`` counts the attempt that just failed (1 after the first try)."""
        if isinstance(error, DeadLetter):
            return RetryDecision(self.dlq_topic(group_id), None, "dead-letter")
        if not self.is_retryable(error):
            reason = (
                "deserialization"
                if isinstance(error, SerializationError)
                else "validation"
                if isinstance(error, ValidationError)
                else "handler"
            )
            return RetryDecision(self.dlq_topic(group_id), None, reason)
        if attempts_so_far >= self.max_attempts or not self.tiers:
            return RetryDecision(self.dlq_topic(group_id), None, "retries-exhausted")
        index = min(attempts_so_far - 1, len(self.tiers) - 1)
        asked = error.delay_s if isinstance(error, RetryLater) else None
        hold_until_ms = None
        if asked is not None:
            # the first tier at or above the delay asked for (or the longest)
            index = max(
                index,
                next((i for i, t in enumerate(self.tiers) if t >= asked), len(self.tiers) - 1),
            )
            if asked > self.tiers[-1]:
                # longer than any tier: "at least delay_s" is kept by re-parking the record in
                # the longest tier until then (streams.stage.routing.repark)
                hold_until_ms = now_ms + math.ceil(1000 * asked)
        delay = self.tiers[index]
        spread = delay * self.jitter
        # jitter only lengthens: a record is never due before its tier's delay
        due_ms = now_ms + round(1000 * (delay + self.rng.uniform(0, spread)))
        return RetryDecision(self.retry_topics(group_id)[index], due_ms, "retry", hold_until_ms)

    @property
    def longest_tier(self) -> tuple[int, float] | None:
        """(index, delay) of the longest tier, or None without tiers."""
        return (len(self.tiers) - 1, self.tiers[-1]) if self.tiers else None
