"""What one stage record becomes in the open transaction: its outputs, or a routed record.

``TransactionWriter`` writes a handled record's outputs, or routes a failed record to its
retry tier or the dead-letter topic (``streams.stage.routing``), and notes each record as
processed in the offset book. A transactional call that fails goes to ``Recovery``, which
aborts or resets and rewinds; the writer then marks the batch ``abandoned``, and the batch
drops the rest of the records it was given (they are read again).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import Message

from streams.config import StageSettings
from streams.exceptions import OutputRejectedError, OutputTopicError, TransactionError
from streams.kafka.messages import Origin, origin_of
from streams.kafka.transaction import Transaction
from streams.offsets import OffsetBook
from streams.record import Output, Record
from streams.spec import StageSpec
from streams.stage import routing
from streams.stage.keyorder import KeyOrdering
from streams.stage.recovery import Recovery
from streams.stage.serdes import Encoded, StageSerdes
from streams.stats import StageStats

__all__ = ["TransactionWriter", "now_ms"]

log = logging.getLogger("streams.stage")


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
        rejected: dict[Origin, str],
        ordering: KeyOrdering | None,
        recovery: Recovery,
        settings: StageSettings,
        stats: StageStats,
    ) -> None:
        self.spec = spec
        self.stats = stats
        self.abandoned = False  # the transaction was aborted mid-batch: drop the rest
        self._serdes = serdes
        self._txn = txn
        self._book = book
        # input records whose output the broker refused (in a transaction since aborted): on
        # reprocessing they go to the DLQ instead of failing the transaction again
        self._rejected = rejected
        self._ordering = ordering
        self._recovery = recovery
        self._max_bytes = settings.max_message_bytes
        self._longest = spec.retry.longest_tier

    def write(self, message: Message, record: Record[Any], outputs: list[Output]) -> None:
        """Encode every output first, then produce them all; a failure routes the record."""
        origin = (record.topic, record.partition, record.offset)
        rejected = self._rejected.get(origin)
        if rejected is not None:
            # the broker refused an output of this record in an aborted transaction
            self.route(message, OutputRejectedError(rejected))
            return
        try:
            encoded = [self._serdes.encode(output, record) for output in outputs]
        except OutputTopicError:
            raise  # the stage's own mistake, not the record's: stop (exit code 5)
        except Exception as error:  # noqa: BLE001 - a bad output is the record's failure
            self.route(message, error)
            return
        oversized = self._oversized(encoded)
        if oversized is not None:
            self.route(message, oversized)
            return
        if not self.open():
            return
        for out in encoded:
            if not self._produce(out.topic, out.value, out.key, out.headers, origin=origin):
                return
            self.stats.produced += 1
        self._processed(message)
        if self._ordering is not None:
            self._ordering.settle_if_retried(message)

    def _oversized(self, encoded: list[Encoded]) -> OutputRejectedError | None:
        limit = self._max_bytes
        for out in encoded:
            if out.size > limit:
                return OutputRejectedError(
                    f"output to {out.topic} is {out.size} bytes, over the limit of {limit}"
                )
        return None

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
            log.warning(
                "record dead-lettered",
                extra={
                    "record": f"{origin[0]}/{origin[1]}@{origin[2]}",
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
        """Produce a routed record in the open transaction and count it; False if abandoned."""
        if not self.open():
            return False
        origin = origin_of(message)
        if not self._produce(
            routed.topic,
            routed.value,
            routed.key,
            routed.headers,
            origin=origin,
            partition=routed.partition,
        ):
            return False
        if routed.reason == "parked":
            self.stats.parked += 1
        elif routed.to_dlq:
            self.stats.dead_lettered += 1
        elif routed.reason == "retry":
            self.stats.retried += 1
        self._processed(message)
        return True

    def _produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        output_headers: list[tuple[str, bytes]],
        *,
        origin: Origin,
        partition: int | None = None,
    ) -> bool:
        try:
            self._txn.produce(topic, value, key, output_headers, origin=origin, partition=partition)
        except TransactionError as error:
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

    def _processed(self, message: Message) -> None:
        self._book.processed(message.topic() or "", message.partition() or 0, message.offset() or 0)
        self.stats.consumed += 1
