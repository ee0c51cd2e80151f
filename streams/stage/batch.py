"""One stage worker's open transaction: consumed records in; outputs, routes and offsets out.

Each record of a batch is decoded, handed to the handler, and its outputs written; a record
that fails is routed to a retry tier or the dead-letter topic (``streams.stage.routing``)
instead. Everything written and the input offsets commit together. A transactional call that
fails hands the error to ``Recovery``; when that aborted the transaction the rest of the batch
is dropped (it was rewound and is read again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from streams import headers
from streams.config import KafkaSettings, StageSettings
from streams.exceptions import (
    OutputRejectedError,
    OutputTopicError,
    SerializationError,
    TransactionError,
)
from streams.kafka.clients import partition_names
from streams.kafka.messages import Origin, message_headers, origin_of
from streams.kafka.transaction import Transaction
from streams.offsets import TP, OffsetBook
from streams.record import Output, Record
from streams.spec import StageSpec
from streams.stage import routing
from streams.stage.gate import RetryGate
from streams.stage.keyorder import KeyOrdering
from streams.stage.recovery import Recovery
from streams.stage.serdes import Encoded, StageSerdes, normalize_outputs
from streams.stats import StageStats

__all__ = ["TransactionBatch"]

log = logging.getLogger("streams.stage")

# How often an idle worker looks for positions that moved past transaction markers alone.
_IDLE_COMMIT_INTERVAL_S = 2.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class TransactionBatch:
    """The open transaction of one stage worker, driven by ``streams.loop.WorkerLoop``."""

    def __init__(
        self,
        *,
        spec: StageSpec,
        client_id: str,
        serdes: StageSerdes,
        consumer: Consumer,
        txn: Transaction,
        rejected: dict[Origin, str],
        kafka: KafkaSettings,
        settings: StageSettings,
        stats: StageStats,
    ) -> None:
        self.spec = spec
        self.stats = stats
        self.rewind_pending = False
        self._serdes = serdes
        self._consumer = consumer
        self._txn = txn
        self._settings = settings
        # input records whose output the broker refused (in a transaction since aborted): on
        # reprocessing they go to the DLQ instead of failing the transaction again
        self._rejected = rejected
        self._book = OffsetBook()
        self._gate = RetryGate(consumer)
        self._retry_topics = frozenset(spec.retry_topics)
        self._longest = spec.retry.longest_tier
        self._ordering = (
            KeyOrdering(group_id=spec.group_id, retry_topics=spec.retry_topics, kafka=kafka)
            if spec.retry.key_ordered
            else None
        )
        self.recovery = Recovery(
            txn=txn,
            consumer=consumer,
            group_id=spec.group_id,
            client_id=client_id,
            kafka=kafka,
            stats=stats,
            rewind=self.rewind,
        )
        self._abandoned = False  # the transaction was aborted mid-batch: drop the rest
        self._idle_checked = 0.0

    # -- what the loop asks ----------------------------------------------------------------

    def room(self) -> int:
        return self._settings.batch_max_records - (self._book.in_batch if self._txn.is_open else 0)

    def age_s(self) -> float | None:
        return self._txn.age_s if self._txn.is_open else None

    def before_consume(self) -> None:
        self._gate.resume_due(now_ms())
        self._txn.poll()

    def process(self, messages: list[Message]) -> None:
        if not messages:
            return
        began = time.monotonic()
        self._abandoned = False
        ready = self._hold_not_due(messages)
        if self.spec.is_async:
            self._process_async(ready)
        else:
            for message in ready:
                self._handle_one(message)
                if self._abandoned:
                    break
        if self._abandoned:
            log.info("batch abandoned after an aborted transaction; input rewound")
        self.stats.observe_batch(time.monotonic() - began)

    def maybe_commit(self, *, force: bool) -> None:
        if not self._txn.is_open:
            if not force:
                self._commit_markers_only()
            return
        due = (
            force
            or self._book.in_batch >= self._settings.batch_max_records
            or self._txn.age_s * 1000 >= self._settings.batch_max_ms
        )
        if due:
            self._commit(between_batches=True)

    def finish(self) -> None:
        self.maybe_commit(force=True)

    def close(self) -> None:
        self._txn.close()  # aborts what is still open
        self._consumer.close()  # leaves the group: partitions move at once, not at timeout

    # -- one record ------------------------------------------------------------------------

    def _hold_not_due(self, messages: list[Message]) -> list[Message]:
        """Drop retry records that are not due yet (and what follows them in their partition)."""
        if not self._retry_topics:
            return messages
        now = now_ms()
        held: set[TP] = set()
        ready = []
        for message in messages:
            tp = (message.topic() or "", message.partition() or 0)
            if tp in held:
                continue
            if tp[0] in self._retry_topics:
                due = headers.get_int(message_headers(message), headers.DUE_MS) or 0
                if due > now:
                    self._gate.hold(tp[0], tp[1], message.offset() or 0, due)
                    self._book.seeked.add(tp)
                    held.add(tp)
                    continue
            ready.append(message)
        return ready

    def _handle_one(self, message: Message) -> None:
        """Decode, call the handler, write its outputs; route any failure. Never skips."""
        if self._ordering is not None:
            parked = self._ordering.parking_for(message)
            if parked is not None:
                self._send(message, parked)
                return
        if self._longest is not None and message.topic() in self._retry_topics:
            until = routing.hold_until(message)
            if until is not None and until > now_ms():
                self._repark(message)
                return
        try:
            record = self._serdes.decode(message)
        except SerializationError as error:
            self._route(message, error)
            return
        try:
            outputs = normalize_outputs(self.spec.handler(record))
        except Exception as error:  # noqa: BLE001 - every handler failure is routed, none lost
            self._route(message, error)
            return
        self._write(message, record, outputs)

    def _process_async(self, messages: list[Message]) -> None:
        decoded: list[tuple[Message, Record[Any]]] = []
        failed: dict[int, SerializationError] = {}
        for index, message in enumerate(messages):
            try:
                decoded.append((message, self._serdes.decode(message)))
            except SerializationError as error:
                failed[index] = error
        results = iter(asyncio.run(self._gather([record for _, record in decoded])))
        pairs = iter(decoded)
        for index, message in enumerate(messages):  # input order, whatever finished first
            if index in failed:
                self._route(message, failed[index])
            else:
                _, record = next(pairs)
                result = next(results)
                if isinstance(result, Exception):
                    self._route(message, result)
                elif isinstance(result, BaseException):
                    raise result
                else:
                    self._write(message, record, normalize_outputs(result))
            if self._abandoned:
                return

    async def _gather(self, records: list[Record[Any]]) -> list[object]:
        limit = asyncio.Semaphore(self.spec.concurrency)
        handler: Callable[[Record[Any]], Awaitable[object]] = self.spec.handler

        async def one(record: Record[Any]) -> object:
            async with limit:
                return await handler(record)

        return await asyncio.gather(*(one(r) for r in records), return_exceptions=True)

    def _write(self, message: Message, record: Record[Any], outputs: list[Output]) -> None:
        """Encode every output first, then produce them all; a failure routes the record."""
        origin = (record.topic, record.partition, record.offset)
        rejected = self._rejected.get(origin)
        if rejected is not None:
            # the broker refused an output of this record in an aborted transaction
            self._route(message, OutputRejectedError(rejected))
            return
        try:
            encoded = [self._serdes.encode(output, record) for output in outputs]
        except OutputTopicError:
            raise  # the stage's own mistake, not the record's: stop (exit code 5)
        except Exception as error:  # noqa: BLE001 - a bad output is the record's failure
            self._route(message, error)
            return
        oversized = self._oversized(encoded)
        if oversized is not None:
            self._route(message, oversized)
            return
        if not self._open():
            return
        for out in encoded:
            if not self._produce(out.topic, out.value, out.key, out.headers, origin=origin):
                return
            self.stats.produced += 1
        self._processed(message)
        if self._ordering is not None:
            self._ordering.settle_if_retried(message)

    def _oversized(self, encoded: list[Encoded]) -> OutputRejectedError | None:
        limit = self._settings.max_message_bytes
        for out in encoded:
            if out.size > limit:
                return OutputRejectedError(
                    f"output to {out.topic} is {out.size} bytes, over the limit of {limit}"
                )
        return None

    def _route(self, message: Message, error: BaseException) -> None:
        """Send the record, untouched, to its retry tier or the DLQ, in the open transaction."""
        routed = routing.route(
            message, error, group_id=self.spec.group_id, policy=self.spec.retry, now_ms=now_ms()
        )
        if not self._open():
            return
        if self._ordering is not None:
            routed = self._ordering.settle(message, routed) or routed
        if not self._send(message, routed):
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

    def _repark(self, message: Message) -> None:
        assert self._longest is not None  # noqa: S101 - checked by the caller
        index, tier_s = self._longest
        reparked = routing.repark(
            message, topic=self.spec.retry_topics[index], tier_s=tier_s, now_ms=now_ms()
        )
        if self._ordering is not None:
            reparked = self._ordering.settle(message, reparked) or reparked
        self._send(message, reparked)

    def _send(self, message: Message, routed: routing.Routed) -> bool:
        """Produce a routed record in the open transaction and count it; False if abandoned."""
        if not self._open():
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

    def _open(self) -> bool:
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
        self.recovery.recover(error)  # aborted or reset, and rewound
        self._abandoned = True

    def _processed(self, message: Message) -> None:
        self._book.processed(message.topic() or "", message.partition() or 0, message.offset() or 0)
        self.stats.consumed += 1

    # -- commit and rewind -----------------------------------------------------------------

    def _commit(self, *, between_batches: bool = False) -> bool:
        """Commit the open transaction; on failure recover (abort/reset + rewind). True if done."""
        positions = (
            self._consumer.position(self._consumer.assignment()) if between_batches else None
        )
        offsets = self._book.to_commit(positions)
        try:
            self._txn.commit(offsets, self._consumer.consumer_group_metadata())
        except TransactionError as error:
            self.recovery.recover(error)
            return False
        self.stats.transactions_committed += 1
        self._book.mark_committed(offsets)
        self._rejected.clear()
        return True

    def _commit_markers_only(self) -> None:
        """Idle: commit positions that moved past markers alone (no records to process)."""
        if self._gate.held or time.monotonic() - self._idle_checked < _IDLE_COMMIT_INTERVAL_S:
            return
        self._idle_checked = time.monotonic()
        moved = self._book.to_commit(self._consumer.position(self._consumer.assignment()))
        if moved and self._open():
            self._commit(between_batches=True)

    def rewind(self, partitions: list[TopicPartition] | None = None) -> None:
        """Seek every assigned partition back to its committed offset."""
        self.rewind_pending = False
        self._book.clear_batch()
        targets = partitions if partitions is not None else self._consumer.assignment()
        if not targets:
            return
        self.stats.rewinds += 1
        for tp in self._consumer.committed(targets, timeout=30):
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            try:
                self._consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
            except KafkaException as error:
                # not fetching yet: it will start from the committed offset anyway
                log.debug("seek %s/%s skipped: %s", tp.topic, tp.partition, error)
        if self._ordering is not None:
            self._ordering.rebuild(self._consumer, self._consumer.assignment())

    # -- rebalance callbacks (run inside consume()) ------------------------------------------

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions assigned: %s", partition_names(partitions))
        if self._ordering is not None:
            self._ordering.rebuild(consumer, partitions)

    def on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions revoked: %s", partition_names(partitions))
        self._gate.forget(partitions)
        if self._txn.is_open:
            # everything handed to us so far has been processed: commit it while we still
            # own the partitions (with the current generation); a failure rewinds
            self.rewind_pending = not self._commit()
        self._book.forget(partitions)
        if self._ordering is not None:
            self._ordering.drop_partitions(partitions)

    def on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning(
            "partitions lost: %s; aborting the open transaction", partition_names(partitions)
        )
        self._gate.forget(partitions)
        if self.recovery.abort_lost():
            self.rewind_pending = True
        self._book.forget(partitions)
