"""One sink worker's open database transaction: the handler's rows and the input offsets.

See ``streams.sinks`` for what each failure leads to. A batch is begun by its first record,
committed when full or old enough (or before its partitions are revoked), and rolled back when
anything fails; a rolled-back batch is read again from the stored offsets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from streams.config import StageSettings
from streams.database import Connection, SinkTransaction
from streams.exceptions import SerializationError, StageStoppedError
from streams.kafka.clients import partition_names
from streams.kafka.messages import decode_message
from streams.offsets import TP, OffsetBook
from streams.record import Record
from streams.serde import Serde
from streams.sinks import offsets as stored_offsets
from streams.sinks.records import Kept, KeptMessage, record_maker
from streams.spec import SinkSpec
from streams.stats import SinkStats

__all__ = ["SqlBatch"]

log = logging.getLogger("streams.sink")

# A commit refused this many times in a row (busy, deadlock, serialization) stops the worker:
# beyond that the cause is not contention but something an operator has to look at.
_MAX_COMMIT_FAILURES = 5
# How often an idle sink looks for positions that moved past transaction markers alone.
_IDLE_COMMIT_INTERVAL_S = 2.0
# How often an idle sink repeats its advisory Kafka commit of the stored offsets: one lost
# while the broker was away (they are asynchronous) would leave lag views behind for ever.
_ADVISORY_REFRESH_S = 30.0


class SqlBatch:
    """The open database transaction of one sink worker, driven by ``WorkerLoop``."""

    def __init__(
        self,
        *,
        spec: SinkSpec,
        key: Serde[Any],
        value: Serde[Any],
        db: Connection,
        consumer: Consumer,
        settings: StageSettings,
        stats: SinkStats,
    ) -> None:
        self.spec = spec
        self.stats = stats
        self.rewind_pending = False
        self._key = key
        self._value = value
        self._db = db
        self._consumer = consumer
        self._settings = settings
        self._tx: SinkTransaction | None = None  # the open batch, if any
        # what the open batch processed, to run the handler again on it (see records.Kept)
        self._kept: list[Kept] = []
        self._started = 0.0
        self._book = OffsetBook()
        self._stored: dict[TP, int | None] = {}  # the stored offsets as this worker last saw them
        self._commit_failures = 0
        self._idle_checked = 0.0
        self._advised = 0.0  # when the stored offsets were last committed to Kafka
        self._make_record = record_maker(key, value)

    # -- what the loop asks ----------------------------------------------------------------

    def room(self) -> int:
        return self._settings.batch_max_records - len(self._kept)

    def age_s(self) -> float | None:
        return time.monotonic() - self._started if self._tx is not None else None

    def before_consume(self) -> None:
        return

    def process(self, messages: list[Message]) -> None:
        # the hot path of a sink: locals instead of attribute lookups, one call per record to
        # build it and one to the handler; the offsets and counters are updated in bulk
        if not messages:
            return
        owned = self._stored
        handler = self.spec.handler
        make = self._make_record
        keep = self._kept.append
        next_offsets = self._book.next
        tx = self._tx
        done = 0
        try:
            for message in messages:
                topic, partition = message.topic(), message.partition()
                if (topic, partition) not in owned:
                    # returned by a consume() during which the partition was revoked or lost
                    continue
                record = make(message) or self._decode_or_stop(message)
                if tx is None:
                    tx = self._begin()
                try:
                    handler(record, tx)
                except Exception as failure:  # noqa: BLE001 - any failure stops on this record
                    self._stop_on(record, failure)
                offset = record.offset
                keep((topic, partition, offset, message.key(), message.value(),
                      record.timestamp_ms, record.headers))  # fmt: skip
                next_offsets[(record.topic, record.partition)] = offset + 1
                done += 1
        finally:
            self.stats.consumed += done
            self._book.in_batch = len(self._kept)

    def maybe_commit(self, *, force: bool) -> None:
        age = self.age_s()
        if age is None:
            if not force:
                self._commit_markers_only()
            return
        if (
            force
            or len(self._kept) >= self._settings.batch_max_records
            or age * 1000 >= self._settings.batch_max_ms
        ):
            self._commit(between_batches=True)

    def _commit_markers_only(self) -> None:
        """Idle: store positions that moved past transaction markers alone (no records).

        An input written by an exactly-once stage ends in a commit or abort marker; a sink that
        stored only the offsets after its records would stay one behind it on every partition
        (lag 1 for ever, until the next record). Every 2 s while idle, positions past stored
        offsets are stored, in a database transaction of their own, with the same
        compare-and-set as a batch. Every 30 s while idle, the stored offsets are committed to
        Kafka again (advisory: for lag views; an asynchronous commit made while the broker was
        away may have been lost).
        """
        now = time.monotonic()
        if now - self._idle_checked < _IDLE_COMMIT_INTERVAL_S or not self._stored:
            return
        self._idle_checked = now
        try:
            positions = self._consumer.position([TopicPartition(t, p) for t, p in self._stored])
        except KafkaException as error:
            log.debug("positions unknown (idle check skipped): %s", error)
            return
        moved = [
            tp
            for tp in positions
            if tp.error is None and tp.offset > (self._stored.get((tp.topic, tp.partition)) or 0)
        ]
        if moved:
            self._begin()
            self._commit(between_batches=True, positions=moved)
        elif now - self._advised >= _ADVISORY_REFRESH_S:
            self._commit_kafka(self._stored_offsets(), asynchronous=True)

    def finish(self) -> None:
        if self._commit(between_batches=True):
            self._commit_kafka(self._stored_offsets(), asynchronous=False)

    def close(self) -> None:
        self._rollback()
        self._consumer.close()  # leaves the group: partitions move at once, not at timeout
        self._db.close()

    # -- records ---------------------------------------------------------------------------

    def _add(self, kept: Kept, record: Record[Any]) -> None:
        self._kept.append(kept)
        self._book.processed(record.topic, record.partition, record.offset)

    def _rebuild(self, kept: Kept) -> Record[Any]:
        """The Record of a kept message again (its codecs accepted it the first time)."""
        message = KeptMessage(kept)
        return self._make_record(message) or decode_message(
            message, key=self._key, value=self._value
        )

    def _decode_or_stop(self, message: Message) -> Record[Any]:
        try:
            return decode_message(message, key=self._key, value=self._value)
        except SerializationError as error:
            self._commit()
            coordinates = f"{error.topic}/{error.partition}@{error.offset}"
            raise StageStoppedError(
                f"sink {self.spec.group_id}: cannot decode record {coordinates}: {error.message}"
                f" (raw value: {len(error.raw or b'')} bytes); stopped without skipping it",
                hint="fix the producer of that record or the sink's input codec; the sink "
                "resumes at this record when restarted",
            ) from error

    def _stop_on(self, record: Record[Any], error: Exception) -> None:
        """Keep the partial success: commit the records before ``record``, then stop on it."""
        before = list(self._kept)
        self._rollback()
        self.stats.batches_rolled_back += 1
        failed, cause = record, error
        while before:
            tx = self._begin()
            for index, kept in enumerate(before):
                earlier = self._rebuild(kept)
                try:
                    self.spec.handler(earlier, tx)
                except Exception as again:  # noqa: BLE001 - it failed this time: stop here
                    self._rollback()
                    failed, cause, before = earlier, again, before[:index]
                    break
                self._add(kept, earlier)
            else:
                if self._commit():
                    break
                raise StageStoppedError(
                    f"sink {self.spec.group_id}: could not commit the records before "
                    f"{failed.coordinates}; stopped on it",
                    hint="see the warnings above; the sink resumes at its stored offsets",
                ) from cause
        raise StageStoppedError(
            f"sink {self.spec.group_id}: handler raised {type(cause).__name__} on record "
            f"{failed.coordinates}: {cause}; stopped without skipping it",
            hint="fix the handler or the database; the sink resumes at this record",
        ) from cause

    # -- transactions ----------------------------------------------------------------------

    def _begin(self) -> SinkTransaction:
        self._db.begin()
        self._tx = SinkTransaction(self._db)
        self._started = time.monotonic()
        return self._tx

    def _commit(
        self, *, between_batches: bool = False, positions: list[TopicPartition] | None = None
    ) -> bool:
        """Store the batch's offsets and commit; on failure roll back and rewind. True if done.

        ``positions``: the consumer's positions, read already (an idle commit past markers).
        """
        if self._tx is None:
            return True
        touched = self._book.next
        if positions is None and touched and between_batches:
            # between consume() calls everything handed to us has been processed; inside one
            # (a revoke) a position may be past records not yet returned to us
            positions = self._consumer.position([TopicPartition(t, p) for (t, p) in touched])
        offsets = self._book.to_commit(positions)
        try:
            self._tx.flush()
            for tp, next_offset in offsets.items():
                stored_offsets.store_offset(
                    self._db, self.spec.group_id, tp, next_offset, expected=self._stored.get(tp)
                )
            self._db.commit()
        except stored_offsets.OffsetConflictError as conflict:
            log.warning("batch rolled back, another worker moved the offsets: %s", conflict)
            self.stats.offset_conflicts += 1
            return self._failed()
        except Exception as error:
            self._commit_failures += 1
            log.warning(
                "batch rolled back, the database refused the commit (%d in a row): %s",
                self._commit_failures,
                error,
            )
            if self._commit_failures >= _MAX_COMMIT_FAILURES:
                self._rollback()
                raise
            return self._failed()
        self._commit_failures = 0
        self.stats.batches_committed += 1
        self.stats.records_committed += len(self._kept)
        self._stored.update(offsets)
        self._tx = None
        self._kept.clear()
        self._book.mark_committed(offsets)
        self._commit_kafka(offsets, asynchronous=True)
        return True

    def _failed(self) -> bool:
        self._rollback()
        self.stats.batches_rolled_back += 1
        self.rewind_pending = True  # the loop seeks, outside any rebalance callback
        return False

    def _rollback(self) -> None:
        """Drop the open batch (the database forgets its writes)."""
        self._tx = None
        self._kept.clear()
        self._book.clear_batch()
        if self._db.in_transaction:
            try:
                self._db.rollback()
            except Exception as error:  # noqa: BLE001 - a dead connection rolls back by itself
                log.warning("rollback failed (the database discards the transaction): %s", error)

    def _commit_kafka(self, offsets: Mapping[TP, int], *, asynchronous: bool) -> None:
        """Advisory: lets lag tools see progress; the offsets in the database are the truth."""
        if not offsets:
            return
        self._advised = time.monotonic()
        try:
            listed = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            if asynchronous:
                self._consumer.commit(offsets=listed, asynchronous=True)
            else:
                self._consumer.commit(offsets=listed, asynchronous=False)
        except KafkaException as error:
            log.info("advisory Kafka offset commit failed (harmless): %s", error)

    def _stored_offsets(self) -> dict[TP, int]:
        return {tp: offset for tp, offset in self._stored.items() if offset is not None}

    def rewind(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Seek every assigned partition back to the offset stored in the database."""
        self.rewind_pending = False
        targets = list(partitions if partitions is not None else self._consumer.assignment())
        if not targets:
            return
        self.stats.rewinds += 1
        stored = stored_offsets.read_offsets(self._db, self.spec.group_id)
        for tp in targets:
            key = (tp.topic, tp.partition)
            self._stored[key] = stored.get(key)
            offset = stored.get(key, OFFSET_BEGINNING)
            try:
                self._consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
            except KafkaException as error:
                # not fetching yet: it starts from the offset given at assignment, which no
                # batch has moved past
                log.debug("seek %s/%s skipped: %s", tp.topic, tp.partition, error)

    # -- rebalance callbacks (run inside consume()) ------------------------------------------

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Start each new partition at the offset stored in the database, not in Kafka."""
        # may run inside an open batch: the read then sees the batch's own (unstored) offsets,
        # which never concern a partition that is only now assigned
        stored = stored_offsets.read_offsets(self._db, self.spec.group_id)
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._stored[key] = stored.get(key)
            tp.offset = stored.get(key, OFFSET_BEGINNING)
        log.info("partitions assigned: %s", partition_names(partitions))
        # with a cooperative assignor, calling incremental_assign here replaces the client's
        # own (which would start at Kafka's committed offsets); it must get the same list
        consumer.incremental_assign(partitions)

    def on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions revoked: %s", partition_names(partitions))
        # everything handed to us so far has been processed: commit it while we own the
        # partitions; a failure rolls back and marks every kept partition for a rewind
        self._commit()
        for tp in partitions:
            self._stored.pop((tp.topic, tp.partition), None)
        self._book.forget(partitions)

    def on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("partitions lost: %s; rolling back the open batch", partition_names(partitions))
        if self._tx is not None:
            self.stats.batches_rolled_back += 1
            self._rollback()
            self.rewind_pending = True
        for tp in partitions:
            self._stored.pop((tp.topic, tp.partition), None)
        self._book.forget(partitions)
