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
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from streams import headers
from streams.config import KafkaSettings, StageSettings
from streams.exceptions import (
    SerializationError,
    TransactionError,
)
from streams.kafka.clients import partition_names
from streams.kafka.limits import TopicLimits
from streams.kafka.messages import message_headers
from streams.kafka.starts import committed_starts
from streams.kafka.transaction import Transaction
from streams.offsets import TP, OffsetBook
from streams.record import Record
from streams.spec import StageSpec
from streams.stage import routing
from streams.stage.fastpath import FastPath
from streams.stage.gate import RetryGate
from streams.stage.guard import Rejections, WriteGuard
from streams.stage.keyorder import KeyOrdering
from streams.stage.recovery import Recovery
from streams.stage.serdes import StageSerdes, normalize_outputs
from streams.stage.writer import TransactionWriter, now_ms
from streams.stats import StageStats

__all__ = ["TransactionBatch"]

log = logging.getLogger("streams.stage")

# How often an idle worker looks for positions that moved past transaction markers alone.
_IDLE_COMMIT_INTERVAL_S = 2.0
# How much longer than transaction.timeout.ms a new owner waits for pending committed offsets
# (the coordinator's abort of a stopped worker's transaction comes within its sweep interval).
_START_MARGIN_S = 30.0


class TransactionBatch:
    """The open transaction of one stage worker, driven by ``streams.loop.WorkerLoop``."""

    # Over 50 lines: the keyword-only wiring of the batch's collaborators, one per line.
    def __init__(
        self,
        *,
        spec: StageSpec,
        client_id: str,
        serdes: StageSerdes,
        consumer: Consumer,
        txn: Transaction,
        rejections: Rejections,
        limits: TopicLimits,
        read_limits: Callable[[Iterable[str]], dict[str, int]],
        producer_config: Callable[[TopicLimits], dict[str, Any]],
        kafka: KafkaSettings,
        settings: StageSettings,
        stats: StageStats,
        eager: bool,
    ) -> None:
        self.spec = spec
        self._eager = eager  # the assignor's protocol: assign() (eager) or incremental_assign()
        self.stats = stats
        self.rewind_pending = False
        self._serdes = serdes
        self._consumer = consumer
        self._txn = txn
        self._settings = settings
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
            group_id=spec.group_id,
            client_id=client_id,
            kafka=kafka,
            stats=stats,
            rewind=self.rewind,
        )
        self.writer = TransactionWriter(
            spec=spec,
            serdes=serdes,
            txn=txn,
            book=self._book,
            guard=WriteGuard(
                spec=spec,
                limits=limits,
                rejections=rejections,
                read_limits=read_limits,
                producer_config=producer_config,
                recovery=self.recovery,
            ),
            ordering=self._ordering,
            recovery=self.recovery,
            stats=stats,
        )
        self._rejections = rejections
        self._idle_checked = 0.0
        self._fast = (
            FastPath(
                spec=spec,
                serdes=serdes,
                writer=self.writer,
                txn=txn,
                book=self._book,
                stats=stats,
                general=self.handle_one,
            )
            if settings.fast_path and FastPath.applies(spec)
            else None
        )

    # -- what the loop asks ----------------------------------------------------------------

    def room(self) -> int:
        return self._settings.batch_max_records - (self._book.in_batch if self._txn.is_open else 0)

    def age_s(self) -> float | None:
        return self._txn.age_s if self._txn.is_open else None

    def before_consume(self) -> None:
        self.writer.dead_letters.flush()
        self._gate.resume_due(now_ms())
        self._txn.poll()
        if not self._txn.is_open:  # between transactions (refusals arrive before the abort)
            refused = self._rejections.size_refusals()
            if refused:
                self.writer.guard.follow_limits(refused)

    def process(self, messages: list[Message]) -> None:
        if not messages:
            return
        began = time.monotonic()
        self.writer.abandoned = False
        ready = self._hold_not_due(messages)
        if self._fast is not None:
            self._fast.run(ready)
        elif self.spec.is_async:
            self._process_async(ready)
        else:
            for message in ready:
                self.handle_one(message)
                if self.writer.abandoned:
                    break
        if self.writer.abandoned:
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

    @property
    def committed(self) -> dict[tuple[str, int], int]:
        """The offsets this worker last committed, per partition it owns (a copy)."""
        return dict(self._book.committed)

    def close(self) -> None:
        self.writer.dead_letters.flush(force=True)
        self._txn.close()  # aborts what is still open
        self._consumer.close()  # leaves the group: partitions move at once, not at timeout

    # -- one record ------------------------------------------------------------------------

    def _hold_not_due(self, messages: list[Message]) -> list[Message]:
        """Drop retry records that are not due yet (and what follows them in their partition)."""
        if not self._retry_topics:
            return messages
        retry_topics = self._retry_topics
        if not any(message.topic() in retry_topics for message in messages):
            return messages  # the common batch: input records only
        now = now_ms()
        held: set[TP] = set()
        ready = []
        for message in messages:
            tp = (message.topic() or "", message.partition() or 0)
            if tp in held:
                continue
            if tp[0] in retry_topics:
                due = headers.get_int(message_headers(message), headers.DUE_MS) or 0
                if due > now:
                    self._gate.hold(tp[0], tp[1], message.offset() or 0, due)
                    self._book.seeked.add(tp)
                    held.add(tp)
                    continue
            ready.append(message)
        return ready

    def handle_one(self, message: Message) -> None:
        """Decode, call the handler, write its outputs; route any failure. Never skips."""
        writer = self.writer
        # guard.troubled, inline (every record): anything failed since the last commit?
        guard = writer.guard
        if (guard.failures or guard.rejections_seen) and writer.escalated(message):
            return
        if self._ordering is not None:
            parked = self._ordering.parking_for(message)
            if parked is not None:
                writer.send(message, parked)
                return
        if self._longest is not None and message.topic() in self._retry_topics:
            until = routing.hold_until(message)
            if until is not None and until > now_ms():
                writer.repark(message)
                return
        try:
            record = self._serdes.decode(message)
        except SerializationError as error:
            writer.route(message, error)
            return
        try:
            outputs = normalize_outputs(self.spec.handler(record))
        except Exception as error:  # noqa: BLE001 - every handler failure is routed, none lost
            writer.route(message, error)
            return
        writer.write(message, record, outputs)

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
                self.writer.route(message, failed[index])
            else:
                _, record = next(pairs)
                result = next(results)
                if isinstance(result, Exception):
                    self.writer.route(message, result)
                elif isinstance(result, BaseException):
                    raise result
                else:
                    self.writer.write(message, record, normalize_outputs(result))
            if self.writer.abandoned:
                return

    async def _gather(self, records: list[Record[Any]]) -> list[object]:
        limit = asyncio.Semaphore(self.spec.concurrency)
        handler: Callable[[Record[Any]], Awaitable[object]] = self.spec.handler

        async def one(record: Record[Any]) -> object:
            async with limit:
                return await handler(record)

        return await asyncio.gather(*(one(r) for r in records), return_exceptions=True)

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
        self.writer.guard.committed()
        return True

    def _commit_markers_only(self) -> None:
        """Idle: commit positions that moved past markers alone (no records to process)."""
        if self._gate.held or time.monotonic() - self._idle_checked < _IDLE_COMMIT_INTERVAL_S:
            return
        self._idle_checked = time.monotonic()
        moved = self._book.to_commit(self._consumer.position(self._consumer.assignment()))
        if moved and self.writer.open():
            self._commit(between_batches=True)

    def rewind(self) -> None:
        """Seek every assigned partition back to its committed offset."""
        self.rewind_pending = False
        self._book.clear_batch()
        targets = self._consumer.assignment()
        if not targets:
            return
        self.stats.rewinds += 1
        starts = self._starts(self._consumer, targets)
        for tp in starts:
            try:
                self._consumer.seek(tp)
            except KafkaException as error:
                # not fetching yet: it will start from the committed offset anyway
                log.debug("seek %s/%s skipped: %s", tp.topic, tp.partition, error)
        if self._ordering is not None:
            self._ordering.rebuild(starts)

    def _starts(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """The committed offsets, stable (see streams.kafka.starts), to start or rewind at."""
        return committed_starts(
            consumer,
            partitions,
            wait_s=self._settings.transaction_timeout_ms / 1000 + _START_MARGIN_S,
            group_id=self.spec.group_id,
        )

    # -- rebalance callbacks (run inside consume()) ------------------------------------------

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Start every partition at an explicit, stable committed offset (never librdkafka's
        own fetch, which can fall back to auto.offset.reset: streams.kafka.starts)."""
        log.info("partitions assigned: %s", partition_names(partitions))
        starts = self._starts(consumer, partitions)
        if self._eager:
            consumer.assign(starts)  # an eager assignor hands over the whole assignment
        else:
            consumer.incremental_assign(starts)
        if self._ordering is not None:
            self._ordering.rebuild(starts)

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
