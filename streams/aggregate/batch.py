"""One aggregate worker's open transaction: records folded in; state, outputs, offsets out.

Per record of a batch: decode, find its windows (``streams.aggregate.state``), fold it into
those still open, or send it to the DLQ as ``late`` when none is; a fold that raises is routed
by the stage's retry policy, to the retry partition numbered like the state partition (the
range assignor gives both to one worker). After each consume, windows the watermark passed
close: their final values are written to the outputs and their state tombstoned. At commit
the changed keys go to the changelog ``P.S.changelog`` (each key once per transaction), then
the transaction commits outputs, changelog, routed records and input offsets together; only
then are the changes applied to the local store. An abort discards them and rewinds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from streams import headers
from streams.aggregate.emit import Emitter
from streams.aggregate.paths import SidePaths
from streams.aggregate.restore import Restorer
from streams.aggregate.state import PartitionState, StateCodec
from streams.aggregate.stats import AggregateStats
from streams.config import KafkaSettings, StageSettings
from streams.exceptions import (
    SerializationError,
    StreamsError,
    TransactionError,
)
from streams.kafka.clients import partition_names
from streams.kafka.limits import TopicLimits
from streams.kafka.starts import committed_starts
from streams.kafka.transaction import Transaction
from streams.offsets import OffsetBook
from streams.record import Record
from streams.retry import RetryPolicy
from streams.spec import AggregateSpec
from streams.stage import routing
from streams.stage.gate import RetryGate
from streams.stage.guard import Rejections, WriteGuard
from streams.stage.recovery import Recovery
from streams.stage.serdes import StageSerdes
from streams.stage.writer import TransactionWriter, now_ms

__all__ = ["AggregateBatch"]

log = logging.getLogger("streams.aggregate")

_IDLE_COMMIT_INTERVAL_S = 2.0  # as the plain stage: commit positions moved past markers alone
# Re-keying a record is never retried: a record read back from a retry topic is folded, so
# what fails before its re-keying goes to the DLQ at once.
_NO_RETRY = RetryPolicy(tiers=(), max_attempts=1)
# As the plain stage: how much longer than transaction.timeout.ms a new owner waits for pending
# committed offsets (the coordinator's abort of a stopped worker's transaction comes within its
# sweep interval).
_START_MARGIN_S = 30.0


class AggregateBatch:
    """The open transaction of one aggregate worker, driven by ``streams.loop.WorkerLoop``."""

    # Over 50 lines: the keyword-only wiring of the batch's collaborators, one per line.
    def __init__(
        self,
        *,
        spec: AggregateSpec,
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
        stats: AggregateStats,
        restorer: Restorer,
        eager: bool = True,
    ) -> None:
        self.spec = spec
        self._eager = eager  # the assignor's protocol: assign() (eager) or incremental_assign()
        stage = spec.as_stage()
        self.stats = stats
        self.rewind_pending = False
        self._serdes = serdes
        self._consumer = consumer
        self._txn = txn
        self._settings = settings
        self._restorer = restorer
        self._book = OffsetBook()
        self._gate = RetryGate(consumer)
        self._retry_topics = frozenset(spec.retry_topics)
        self._fold_topics = frozenset(spec.fold_topics)
        self._longest = spec.retry.longest_tier
        self._codec = StateCodec(spec.state_model)
        self._emit_updates = spec.emit == "update"
        self.states: dict[int, PartitionState] = {}
        self.recovery = Recovery(
            txn=txn,
            group_id=spec.group_id,
            client_id=client_id,
            kafka=kafka,
            stats=stats,
            rewind=self.rewind,
        )
        guard = WriteGuard(
            spec=stage,
            limits=limits,
            rejections=rejections,
            read_limits=read_limits,
            producer_config=producer_config,
            recovery=self.recovery,
        )
        self.writer = TransactionWriter(
            spec=stage,
            serdes=serdes,
            txn=txn,
            book=self._book,
            guard=guard,
            ordering=None,
            recovery=self.recovery,
            stats=stats,
        )
        self._emitter = Emitter(
            spec=spec,
            serdes=serdes,
            txn=txn,
            writer=self.writer,
            recovery=self.recovery,
            stats=stats,
        )
        self._paths = SidePaths(
            spec=spec,
            serdes=serdes,
            writer=self.writer,
            emitter=self._emitter,
            book=self._book,
            gate=self._gate,
            stats=stats,
        )
        self._rejections = rejections
        self._idle_checked = 0.0

    # -- what the loop asks ----------------------------------------------------------------

    def room(self) -> int:
        return self._settings.batch_max_records - (self._book.in_batch if self._txn.is_open else 0)

    def age_s(self) -> float | None:
        return self._txn.age_s if self._txn.is_open else None

    def before_consume(self) -> None:
        self.writer.dead_letters.flush()
        self._gate.resume_due(now_ms())
        self._txn.poll()
        if not self._txn.is_open:
            refused = self._rejections.size_refusals()
            if refused:
                self.writer.guard.follow_limits(refused)

    def process(self, messages: list[Message]) -> None:
        if not messages:
            return
        began = time.monotonic()
        self.writer.abandoned = False
        for message in self._paths.hold_not_due(messages):
            self._handle_one(message)
            if self.writer.abandoned:
                break
        if not self.writer.abandoned:
            self._emitter.close_windows(self.states.values())
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
        self.writer.dead_letters.flush(force=True)
        self._txn.close()  # aborts what is still open
        self._release(list(self.states), checkpoint=True)
        self._consumer.close()

    # -- one record ------------------------------------------------------------------------

    def _handle_one(self, message: Message) -> None:
        """Decode, place, fold (or route, or re-key); never skips a record."""
        writer = self.writer
        guard = writer.guard
        if (guard.failures or guard.rejections_seen) and writer.escalated(message):
            return
        topic = message.topic()
        if self._longest is not None and topic in self._retry_topics:
            until = routing.hold_until(message)
            if until is not None and until > now_ms():
                writer.repark(message)
                return
        rekey = topic not in self._fold_topics
        try:
            record = self._serdes.decode(message)
        except SerializationError as error:
            self._paths.route(message, error, retry=not rekey)
            return
        if rekey:
            self._paths.repartition(message, record)
        else:
            self._fold(message, record)

    def _fold(self, message: Message, record: Record[Any]) -> None:
        """Fold the record into its open windows, or send it aside as late or failed."""
        partition = record.partition
        state = self.states.get(partition)
        if state is None:
            state = self._state(partition)
        try:
            event_ms = self._event_ms(record)
        except Exception as error:  # noqa: BLE001 - the user's function: routed, never lost
            self._paths.route(message, error)
            return
        windows, closed = state.place(event_ms)
        if not windows:
            self._paths.late(message)
            return
        if not self._txn.is_open and not self.writer.open():
            return
        key = message.key() or b""
        try:
            results = state.fold(key, windows, self.spec.fold, record)
        except Exception as error:  # noqa: BLE001 - every fold failure is routed, none lost
            state.observe(event_ms)
            self._paths.route(message, error)
            return
        state.observe(event_ms)
        if closed:
            self.stats.late_windows += closed
        if self._emit_updates:
            for window, value in results:
                if not self._emitter.emit(key, window, value, message=message):
                    return
        # OffsetBook.processed(), inline: this runs for every record
        book = self._book
        book.next[(record.topic, partition)] = record.offset + 1
        book.in_batch += 1
        self.stats.consumed += 1

    def _state(self, partition: int) -> PartitionState:
        state = self.states.get(partition)
        if state is None:  # on_assign restores every assigned partition first
            raise StreamsError(f"stage {self.spec.group_id}: partition {partition} has no state")
        return state

    def _event_ms(self, record: Record[Any]) -> int:
        if self.spec.event_time is not None:
            found = self.spec.event_time(record.value)
            return round(found.timestamp() * 1000) if isinstance(found, datetime) else int(found)
        if record.headers:  # re-keyed or retried: the time of the record as it first came in
            original = headers.get_int(record.headers, headers.ORIGINAL_TIMESTAMP)
            if original is not None:
                return original
        return record.timestamp_ms

    # -- commit and rewind -----------------------------------------------------------------

    def _commit(self, *, between_batches: bool = False) -> bool:
        """Changelog, then commit; the store follows only a commit that succeeded."""
        written: dict[int, dict[bytes, bytes | None]] = {}
        for partition, state in self.states.items():
            changes = dict(state.changes())
            if changes and not self._emitter.changelog(partition, changes):
                return False
            written[partition] = changes
        positions = (
            self._consumer.position(self._consumer.assignment()) if between_batches else None
        )
        offsets = self._book.to_commit(positions)
        try:
            self._txn.commit(offsets, self._consumer.consumer_group_metadata())
        except TransactionError as error:
            self.recovery.recover(error)
            return False
        for partition, changes in written.items():
            self.states[partition].commit(changes)
        self.stats.transactions_committed += 1
        self._book.mark_committed(offsets)
        self.writer.guard.committed()
        return True

    def _commit_markers_only(self) -> None:
        if self._gate.held or time.monotonic() - self._idle_checked < _IDLE_COMMIT_INTERVAL_S:
            return
        self._idle_checked = time.monotonic()
        moved = self._book.to_commit(self._consumer.position(self._consumer.assignment()))
        if moved and self.writer.open():
            self._commit(between_batches=True)

    def rewind(self) -> None:
        """Drop the open transaction's state changes; seek back to the committed offsets."""
        self.rewind_pending = False
        self._book.clear_batch()
        for state in self.states.values():
            state.discard()
        targets = self._consumer.assignment()
        if not targets:
            return
        self.stats.rewinds += 1
        for tp in self._starts(self._consumer, targets):
            try:
                self._consumer.seek(tp)
            except KafkaException as error:
                # not fetching yet: it starts at the offset it was assigned at anyway
                log.debug("seek %s/%s skipped: %s", tp.topic, tp.partition, error)

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
        """Learn the stable committed starts, restore the state, then assign at those starts.

        The starts come first: they wait while a stopped worker's transaction holds the
        offsets, and that transaction's changelog records are part of the state only once it
        has ended. The partitions are assigned at explicit offsets, never librdkafka's own
        fetch, which can fall back to auto.offset.reset (streams.kafka.starts); no record of a
        partition is fetched before its state is restored.
        """
        log.info("partitions assigned: %s", partition_names(partitions))
        starts = self._starts(consumer, partitions)
        wanted = {tp.partition for tp in partitions} - set(self.states)
        for partition, store in self._restorer.restore(wanted).items():
            self.states[partition] = PartitionState(
                partition,
                store,
                window=self.spec.window,
                codec=self._codec,
                initial=self.spec.initial,
            )
        self.stats.state_partitions = len(self.states)
        if self._eager:
            consumer.assign(starts)  # an eager assignor hands over the whole assignment
        else:
            consumer.incremental_assign(starts)

    def on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions revoked: %s", partition_names(partitions))
        self._gate.forget(partitions)
        if self._txn.is_open:
            self.rewind_pending = not self._commit()
        self._book.forget(partitions)
        self._release({tp.partition for tp in partitions}, checkpoint=True)

    def on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning(
            "partitions lost: %s; aborting the open transaction", partition_names(partitions)
        )
        self._gate.forget(partitions)
        if self.recovery.abort_lost():
            self.rewind_pending = True
        self._book.forget(partitions)
        self._release({tp.partition for tp in partitions}, checkpoint=False)

    def _release(self, partitions: Iterable[int], *, checkpoint: bool) -> None:
        """Close the stores of partitions leaving this worker (checkpointed if clean)."""
        leaving = {p: self.states.pop(p) for p in list(partitions) if p in self.states}
        for state in leaving.values():
            state.discard()
        if checkpoint and leaving:
            self._restorer.checkpoint({p: s.store for p, s in leaving.items()})
        for state in leaving.values():
            state.store.close()
        self.stats.state_partitions = len(self.states)
