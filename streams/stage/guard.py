"""What keeps a stage's writes from stalling a partition: limits, refusals, repeated failures.

``WriteGuard`` knows each destination topic's size limit (``streams.kafka.limits``), the input
records whose writes the broker refused (``Rejections``) and those whose writes failed the
producer since the last commit. From those it decides when a record can never be written where
it goes, so that ``TransactionWriter`` routes it to the DLQ as a bounded ``unroutable`` record
instead of failing the transaction over and over; and when not even that can be written, it
names the record in the error that stops the stage (exit code 3).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Message

from streams.exceptions import OutputRejectedError, StageStoppedError, TransactionError
from streams.kafka.limits import RECORD_OVERHEAD_BYTES, TopicLimits, record_size
from streams.kafka.messages import Origin, origin_of
from streams.kafka.transaction import Refusal
from streams.spec import StageSpec
from streams.stage.recovery import Recovery
from streams.stage.serdes import Encoded

__all__ = ["DeadLetterLog", "Rejections", "WriteGuard"]

log = logging.getLogger("streams.stage")

# A record whose writes failed the producer this many times in a row (each time a reset and a
# rewind) is routed aside as unroutable: the same record would fail it forever.
_MAX_FAILURES_PER_RECORD = 3


class Rejections:
    """Input records whose writes the broker refused, by the input's coordinates.

    Filled by the transaction's delivery reports (``Transaction(on_rejected=rejections.add)``)
    in a transaction that then aborts; read when the record is processed again after the
    rewind; cleared at the next commit. A refusal for size may be the batch's fault rather
    than the record's (the broker refuses the whole batch): ``size_refusals`` lets the batch
    re-read the topics' limits first, and forget the refusals that the new limits explain.
    """

    def __init__(self) -> None:
        # origin -> (times refused, last reason); read directly on the hot path (empty: fine)
        self.seen: dict[Origin, tuple[int, str]] = {}
        self._too_large: dict[Origin, str] = {}  # origin -> topic, refused for size

    def add(self, refusal: Refusal) -> None:
        self.note(refusal.origin, refusal.reason)
        if refusal.too_large:
            self._too_large[refusal.origin] = refusal.topic

    def note(self, origin: Origin, reason: str) -> None:
        count, _ = self.seen.get(origin, (0, ""))
        self.seen[origin] = (count + 1, reason)

    def get(self, origin: Origin) -> tuple[int, str] | None:
        """(times refused, the last reason), or None."""
        return self.seen.get(origin)

    def size_refusals(self) -> dict[Origin, str]:
        """The refusals for size not yet looked into (origin -> topic); taken, not kept."""
        found, self._too_large = self._too_large, {}
        return found

    def forget(self, origins: Iterable[Origin]) -> None:
        for origin in origins:
            self.seen.pop(origin, None)

    def clear(self) -> None:
        self.seen.clear()
        self._too_large.clear()


class DeadLetterLog:
    """One WARNING line per interval for the records dead-lettered in it, by reason.

    A stage fed bad input dead-letters thousands of records; a line per record would drown
    everything else in the log (each record's line is kept at DEBUG).
    """

    def __init__(self, dlq_topic: str, interval_s: float = 5.0) -> None:
        self._dlq = dlq_topic
        self._interval_s = interval_s
        self._since = time.monotonic()
        self._reasons: dict[str, int] = {}
        self._last = ""

    def add(self, reason: str, where: str) -> None:
        self._reasons[reason] = self._reasons.get(reason, 0) + 1
        self._last = where

    def flush(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self._reasons or (not force and now - self._since < self._interval_s):
            return
        total = sum(self._reasons.values())
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(self._reasons.items()))
        log.warning(
            "dead-lettered %d records in the last %.0f s (%s), last %s; see `streams dlq ls`",
            total,
            now - self._since,
            reasons,
            self._last,
            extra={"dlq": self._dlq},
        )
        self._reasons.clear()
        self._since = now


class WriteGuard:
    """The limits and failures that decide whether a stage's record can be written at all."""

    def __init__(
        self,
        *,
        spec: StageSpec,
        limits: TopicLimits,
        rejections: Rejections,
        read_limits: Callable[[Iterable[str]], dict[str, int]],
        producer_config: Callable[[TopicLimits], dict[str, Any]],
        recovery: Recovery,
    ) -> None:
        self.spec = spec
        self.limits = limits
        self._rejections = rejections
        self.rejections_seen = rejections.seen  # the same dict, for the batch's hot path
        self._read_limits = read_limits
        self._producer_config = producer_config
        self._recovery = recovery
        # records whose writes failed the producer (reset + rewind), since the last commit; read
        # directly on the hot path
        self.failures: dict[Origin, tuple[int, str]] = {}
        self._limit_of: dict[str, int] = {}  # the limits per topic, looked up once (hot path)

    def limit(self, topic: str) -> int:
        found = self._limit_of.get(topic)
        if found is None:
            found = self._limit_of[topic] = self.limits.limit(topic)
        return found

    def refused(self, origin: Origin) -> tuple[int, str] | None:
        seen = self.rejections_seen
        return seen.get(origin) if seen else None

    def note_refusal(self, origin: Origin, reason: str) -> None:
        self._rejections.note(origin, reason)

    def note_failure(self, origin: Origin, error: TransactionError) -> None:
        count, _ = self.failures.get(origin, (0, ""))
        self.failures[origin] = (count + 1, str(error))

    @property
    def troubled(self) -> bool:
        """Something failed since the last commit: ``escalated`` must look at each record.

        The batch reads ``failures`` and ``rejections_seen`` itself on its hot path.
        """
        return bool(self.failures or self.rejections_seen)

    def escalation(self, message: Message) -> str | None:
        """Why ``message`` must be routed as unroutable (it failed every write before), or None."""
        origin = origin_of(message)
        refused = self._rejections.get(origin)
        failed = self.failures.get(origin)
        if refused is not None and refused[0] >= 2:  # noqa: PLR2004 - once as itself, once bounded
            why = f"the broker refused its writes {refused[0]} times: {refused[1]}"
        elif failed is not None and failed[0] >= _MAX_FAILURES_PER_RECORD:
            why = (
                f"writing it failed the producer {failed[0]} times in a row (a new producer "
                f"each time): {failed[1]}"
            )
        else:
            return None
        return why

    def follow_limits(self, refused: dict[Origin, str]) -> None:
        """The broker refused records for size: its topics' limits may have changed.

        Re-read them. Where a limit changed, the new one is followed (a smaller batch size, so
        a new producer) and the refusals are forgotten: the check before each write now routes
        what is really too large, and a record refused only because it shared a batch with a
        large one goes through. Where nothing changed, the records stay marked and go to the
        DLQ when read again.
        """
        topics = set(refused.values())
        before = {topic: self.limits.limit(topic) for topic in topics}
        self.limits.update(self._read_limits(topics))
        self._limit_of.clear()
        changed = {t: (before[t], self.limits.limit(t)) for t in topics}
        changed = {t: limits for t, limits in changed.items() if limits[0] != limits[1]}
        if not changed:
            return
        log.warning(
            "topic size limits changed since start-up; following them: %s",
            ", ".join(f"{t} {old} -> {new} bytes" for t, (old, new) in sorted(changed.items())),
        )
        self._rejections.forget(refused)
        self._recovery.reset_producer(
            TransactionError("the producer's size settings follow the new limits"),
            config=self._producer_config(self.limits),
        )

    def committed(self) -> None:
        """The transaction committed: what failed before is forgotten."""
        self.failures.clear()
        self._rejections.clear()

    def oversized(self, encoded: list[Encoded]) -> OutputRejectedError | None:
        for topic, value, key, out_headers in encoded:
            # record_size(), inline for the common output without headers (every record)
            size = (
                record_size(key, value, out_headers)
                if out_headers
                else RECORD_OVERHEAD_BYTES + len(key or b"") + len(value or b"")
            )
            limit = self._limit_of.get(topic)
            if limit is None:
                limit = self._limit_of[topic] = self.limits.limit(topic)
            if size > limit:
                return OutputRejectedError(
                    f"output to {topic} is {size} bytes, over the limit of {limit}"
                )
        return None

    def stuck(self, message: Message, why: str) -> StageStoppedError:
        origin = origin_of(message)
        return StageStoppedError(
            f"stage {self.spec.group_id}: record {origin[0]}/{origin[1]}@{origin[2]} cannot be "
            f"written anywhere, not even as a bounded record to {self.spec.dlq_topic}: {why}",
            hint=f"raise max.message.bytes of {self.spec.dlq_topic} (or fix the permission the "
            "error names); the stage resumes at this record",
        )

    # -- the transaction -------------------------------------------------------------------
