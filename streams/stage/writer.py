"""What one stage record becomes in the open transaction: its outputs, or a routed record.

``TransactionWriter`` writes a handled record's outputs, or routes a failed record to its
retry tier or the dead-letter topic (``streams.stage.routing``), and notes each record as
processed in the offset book. A transactional call that fails goes to ``Recovery``, which
aborts or resets and rewinds; the writer then marks the batch ``abandoned``, and the batch
drops the rest of the records it was given (they are read again).

No record can stall its partition. Every write is checked against its destination topic's
limit (``streams.stage.guard``) before it is produced; a record that no retry can ever write
there (too large, invalid, not authorised: refused by the client, or by the broker in a
transaction since aborted, or failing the producer three times in a row) goes to the DLQ as a
bounded record with reason ``unroutable``. If even that cannot be written, the stage stops
with ``StageStoppedError`` (exit code 3) naming the record: it never loops.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import Message

from streams.exceptions import (
    OutputRejectedError,
    OutputTopicError,
    TransactionError,
)
from streams.kafka.messages import Origin, origin_of
from streams.kafka.transaction import Transaction, TxnState
from streams.offsets import OffsetBook
from streams.record import Output, Record
from streams.spec import StageSpec
from streams.stage import routing
from streams.stage.guard import DeadLetterLog, WriteGuard
from streams.stage.keyorder import KeyOrdering
from streams.stage.recovery import Recovery
from streams.stage.serdes import Encoded, StageSerdes
from streams.stats import StageStats

__all__ = ["TransactionWriter", "now_ms"]

log = logging.getLogger("streams.stage")

_OPEN = TxnState.OPEN


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class TransactionWriter:
    """Produces a stage's outputs and routed records into its one open transaction."""

    def __init__(
        self,
        *,
        spec: StageSpec,
        serdes: StageSerdes,
        txn: Transaction,
        book: OffsetBook,
        guard: WriteGuard,
        ordering: KeyOrdering | None,
        recovery: Recovery,
        stats: StageStats,
    ) -> None:
        self.spec = spec
        self.stats = stats
        self.abandoned = False  # the transaction was aborted mid-batch: drop the rest
        self._serdes = serdes
        self._txn = txn
        self._book = book
        self.guard = guard
        self._ordering = ordering
        self._recovery = recovery
        self._longest = spec.retry.longest_tier
        self.dead_letters = DeadLetterLog(spec.dlq_topic)

    # -- what the batch asks ---------------------------------------------------------------

    def escalated(self, message: Message) -> bool:
        """Route ``message`` as unroutable if it failed every write before; True if it did."""
        why = self.guard.escalation(message)
        if why is None:
            return False
        self._send_bounded(message, why)
        return True

    def write(self, message: Message, record: Record[Any], outputs: list[Output]) -> None:
        """Encode every output first, then produce them all; a failure routes the record."""
        origin = (record.topic, record.partition, record.offset)
        refused = self.guard.refused(origin)
        if refused is not None:
            # the broker refused a write of this record in an aborted transaction
            self.route(message, OutputRejectedError(refused[1]))
            return
        try:
            encoded = [self._serdes.encode(output, record) for output in outputs]
        except OutputTopicError:
            raise  # the stage's own mistake, not the record's: stop (exit code 5)
        except Exception as error:  # noqa: BLE001 - a bad output is the record's failure
            self.route(message, error)
            return
        oversized = self.guard.oversized(encoded)
        if oversized is not None:
            self.route(message, oversized)
            return
        if self._txn.state is not _OPEN and not self.open():
            return
        if not self._produce_outputs(message, encoded, origin):
            return
        self._processed(origin)
        if self._ordering is not None:
            self._ordering.settle_if_retried(message)

    def _produce_outputs(self, message: Message, encoded: list[Encoded], origin: Origin) -> bool:
        """Produce every output of one record; False if the record was routed or abandoned."""
        if len(encoded) == 1:  # the common case, without the loop's bookkeeping
            out = encoded[0]
            try:
                produced = self._produce(out[0], out[1], out[2], out[3], origin=origin)
            except OutputRejectedError as error:
                self.route(message, error)  # nothing of this record went out
                return False
            if produced:
                self.stats.produced += 1
            return produced
        for index, out in enumerate(encoded):
            try:
                if not self._produce(out.topic, out.value, out.key, out.headers, origin=origin):
                    return False
            except OutputRejectedError as error:
                if index == 0:  # nothing of this record went out: route it instead
                    self.route(message, error)
                    return False
                # outputs of it went out before this one was refused: they must not commit, so
                # the transaction aborts; read again, the record goes to the DLQ instead
                self.guard.note_refusal(origin, str(error))
                self._abandon(
                    TransactionError(f"{error}; aborting what went before it", requires_abort=True)
                )
                return False
            self.stats.produced += 1
        return True

    def route(self, message: Message, error: BaseException) -> None:
        """Send the record, untouched, to its retry tier or the DLQ, in the open transaction."""
        routed = routing.route(
            message, error, group_id=self.spec.group_id, policy=self.spec.retry, now_ms=now_ms()
        )
        if not self.open():
            return
        if self._ordering is not None:
            routed = self._ordering.settle(message, routed) or routed
        if not self.send(message, routed):
            return
        if routed.to_dlq:
            origin = origin_of(message)
            where = f"{origin[0]}/{origin[1]}@{origin[2]}"
            log.debug(
                "record dead-lettered",
                extra={
                    "record": where,
                    "reason": routed.reason,
                    "error": f"{type(error).__name__}: {error}"[:300],
                    "dlq": routed.topic,
                },
            )

    def repark(self, message: Message) -> None:
        assert self._longest is not None  # noqa: S101 - checked by the caller
        index, tier_s = self._longest
        reparked = routing.repark(
            message, topic=self.spec.retry_topics[index], tier_s=tier_s, now_ms=now_ms()
        )
        if self._ordering is not None:
            reparked = self._ordering.settle(message, reparked) or reparked
        self.send(message, reparked)

    def send(self, message: Message, routed: routing.Routed) -> bool:
        """Produce a routed record in the open transaction and count it; False if abandoned.

        A record its destination can never take is replaced by a bounded DLQ record.
        """
        if not self.open():
            return False
        limit = self.guard.limit(routed.topic)
        if routed.reason != "unroutable" and routed.size > limit:
            return self._send_bounded(
                message, f"{routed.size} bytes for {routed.topic}, over its limit of {limit}"
            )
        try:
            produced = self._produce(
                routed.topic,
                routed.value,
                routed.key,
                routed.headers,
                origin=origin_of(message),
                partition=routed.partition,
            )
        except OutputRejectedError as error:
            if routed.reason == "unroutable":
                raise self.guard.stuck(message, str(error)) from error
            return self._send_bounded(message, str(error))
        if not produced:
            return False
        if routed.reason == "parked":
            self.stats.parked += 1
        elif routed.to_dlq:
            self.stats.dead_lettered += 1
            origin = origin_of(message)
            self.dead_letters.add(routed.reason, f"{origin[0]}/{origin[1]}@{origin[2]}")
        elif routed.reason == "retry":
            self.stats.retried += 1
        self._processed(origin_of(message))
        return True

    def _send_bounded(self, message: Message, why: str) -> bool:
        """Write ``message`` to the DLQ as ``unroutable``, cut to fit; stop if nothing fits."""
        dlq = self.spec.dlq_topic
        bounded = routing.unroutable(
            message,
            group_id=self.spec.group_id,
            dlq_topic=dlq,
            limit=self.guard.limit(dlq),
            why=why,
            now_ms=now_ms(),
        )
        if bounded is None:
            raise self.guard.stuck(message, why)
        if self._ordering is not None:
            self._ordering.settle(message, None)
        origin = origin_of(message)
        log.warning(
            "record unroutable: dead-lettered with as much of its value as fits",
            extra={
                "record": f"{origin[0]}/{origin[1]}@{origin[2]}",
                "why": why[:300],
                "dlq": dlq,
                "value_bytes": len(message.value() or b""),
                "kept_bytes": len(bounded.value or b""),
            },
        )
        return self.send(message, bounded)

    def _produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        output_headers: list[tuple[str, bytes | None]],
        *,
        origin: Origin,
        partition: int | None = None,
    ) -> bool:
        """Produce; False if the transaction failed (recovered, batch abandoned).

        Raises OutputRejectedError when the client refused the record itself (the
        transaction is still open and usable).
        """
        try:
            self._txn.produce(topic, value, key, output_headers, origin=origin, partition=partition)
        except TransactionError as error:
            self.guard.note_failure(origin, error)
            self._abandon(error)
            return False
        return True

    def open(self) -> bool:
        """A transaction is open (begun now if need be); False if beginning failed."""
        if self._txn.is_open:
            return True
        try:
            self._txn.begin()
        except TransactionError as error:
            # a fatal error surfaced since the last commit (a fenced delivery, say)
            self._abandon(error)
            return False
        return True

    def _abandon(self, error: TransactionError) -> None:
        self._recovery.recover(error)  # aborted or reset, and rewound
        self.abandoned = True

    def _processed(self, origin: Origin) -> None:
        # OffsetBook.processed(), inline: this runs for every record
        book = self._book
        book.next[(origin[0], origin[1])] = origin[2] + 1
        book.in_batch += 1
        self.stats.consumed += 1
