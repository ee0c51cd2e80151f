"""Exactly-once from Kafka into a SQL database: the rows and the input offsets in one DB commit.

::

    numbers = SinkSpec(
        pipeline="orders", name="to-db", inputs=("orders.placed",),
        input_codec=json(OrderPlaced), key_codec=text(),
        database="postgresql://app@db:5432/shop",   # STREAMS_SINK_DATABASE_URL overrides it
        setup_sql=("CREATE TABLE IF NOT EXISTS orders (origin TEXT PRIMARY KEY, total BIGINT)",),
        handler=store_order,
    )

    def store_order(record: Record[OrderPlaced], tx: SinkTransaction) -> None:
        tx.execute(
            "INSERT INTO orders (origin, total) VALUES (:origin, :total) ON CONFLICT DO NOTHING",
            {"origin": tx.idempotency_key(record), "total": record.value.total},
        )

Kafka transactions cannot cover a database (see 2.10 of the EOS notes), so a sink does not use
them: the offsets live in the database itself, in ``streams_sink_offsets``, and each batch is
one database transaction holding the handler's writes *and* the next offset of every partition
it touched. A crash at any point leaves either both or neither; a restart reads the offsets from
the database (in ``on_assign``) and resumes exactly there. The offsets are also committed to
Kafka after each database commit, but only so that lag tools see progress: they are advisory.

SQL parameters are always written ``:name`` and passed as a mapping, whatever the database; they
are translated for psycopg (``%(name)s``, with literal ``%`` doubled). Text inside quotes,
comments and ``::`` casts is left alone. A statement run without parameters is sent unchanged.

What happens on each kind of failure:

- a handler raises on a record, or a record cannot be decoded: the batch is rolled back, the
  records before it are committed (re-run in a fresh transaction: PostgreSQL aborts a whole
  transaction on a failed statement, and a savepoint per record would overflow its
  subtransaction cache), then ``StageStoppedError`` names the record; a restart resumes at it;
- the database refuses the commit (busy, serialization failure, deadlock): roll back, seek every
  assigned partition back to its stored offset and redo the batch, up to a few times in a row;
  a lost connection stops the worker (exit code 1, the supervisor restarts it);
- the stored offset changed under us (a worker that lost its partitions still running, say):
  each offset is written only if it still holds the value this worker last saw, so the zombie's
  batch is rolled back and the partition re-read from the stored offset;
- partitions revoked: the open batch is committed first; partitions lost: it is rolled back.

The handler may run more than once for a record (a rolled-back batch is redone), but its writes
are committed once. Writes to anything other than ``tx`` are not covered: key them with
``tx.idempotency_key(record)`` if they must happen once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from streams import headers
from streams.codecs import Codec, registry_for
from streams.config import KafkaSettings, SinkSettings, StageSettings
from streams.database import Connection, Database, Dialect, Params, Result
from streams.exceptions import SerializationError, StageStoppedError
from streams.kafka.clients import partition_names, worker_consumer_config
from streams.record import Record
from streams.serde import Serde
from streams.stage import decode_message

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

__all__ = [
    "OFFSETS_TABLE",
    "Connection",
    "Database",
    "Result",
    "SinkHandler",
    "SinkRunner",
    "SinkSettings",
    "SinkSpec",
    "SinkStats",
    "SinkTransaction",
    "ensure_offsets_table",
    "read_offsets",
]

log = logging.getLogger("streams.sink")

TP = tuple[str, int]

OFFSETS_TABLE = "streams_sink_offsets"
# "partition" is quoted: it is a keyword in SQLite (window functions) and in PostgreSQL.
_CREATE_OFFSETS = f"""CREATE TABLE IF NOT EXISTS {OFFSETS_TABLE} (
    group_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    "partition" INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (group_id, topic, "partition")
)"""
_SELECT_OFFSETS = (
    'SELECT topic, "partition", next_offset FROM streams_sink_offsets WHERE group_id = :group_id'
)
_INSERT_OFFSET = (
    'INSERT INTO streams_sink_offsets (group_id, topic, "partition", next_offset) '
    "VALUES (:group_id, :topic, :partition, :next_offset) ON CONFLICT DO NOTHING"
)
_UPDATE_OFFSET = (
    "UPDATE streams_sink_offsets SET next_offset = :next_offset WHERE group_id = :group_id "
    'AND topic = :topic AND "partition" = :partition AND next_offset = :expected'
)
# A commit refused this many times in a row (busy, deadlock, serialization) stops the worker:
# beyond that the cause is not contention but something an operator has to look at.
_MAX_COMMIT_FAILURES = 5


# -- offsets ---------------------------------------------------------------------------------


class _OffsetConflictError(Exception):
    """The stored offset is not the one this worker last saw: someone else committed it."""


def ensure_offsets_table(connection: Connection) -> None:
    connection.execute(_CREATE_OFFSETS)


def read_offsets(connection: Connection, group_id: str) -> dict[TP, int]:
    """The stored next offset of every partition of ``group_id``: where a restart resumes."""
    result = connection.execute(_SELECT_OFFSETS, {"group_id": group_id})
    return {(str(topic), int(partition)): int(offset) for topic, partition, offset in result.rows}


def _store_offset(
    connection: Connection, group_id: str, tp: TP, next_offset: int, *, expected: int | None
) -> None:
    """Write ``next_offset`` only if the stored value is still ``expected`` (None: no row)."""
    values = {"group_id": group_id, "topic": tp[0], "partition": tp[1], "next_offset": next_offset}
    if expected is None:
        changed = connection.execute(_INSERT_OFFSET, values).rowcount
    else:
        changed = connection.execute(_UPDATE_OFFSET, {**values, "expected": expected}).rowcount
    if changed != 1:
        raise _OffsetConflictError(
            f"{tp[0]}/{tp[1]}: stored offset is no longer {expected} (group {group_id})"
        )


# -- what a handler sees ---------------------------------------------------------------------


class SinkTransaction:
    """The batch's database transaction, as a handler sees it: run statements, never commit."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._queued: dict[str, list[Params]] = {}

    @property
    def dialect(self) -> Dialect:
        """``sqlite`` or ``postgresql``, for the rare statement that differs between them."""
        return self._connection.dialect

    def execute(self, sql: str, params: Params | None = None) -> Result:
        """Run one statement inside the batch's transaction; write parameters as ``:name``."""
        return self._connection.execute(sql, params)

    def executemany(self, sql: str, params: Iterable[Params]) -> int:
        return self._connection.executemany(sql, params)

    def add(self, sql: str, params: Params) -> None:
        """Queue a write; all queued writes go in one ``executemany`` per statement at commit.

        The fast form for inserts: one database round trip per statement and batch instead of
        one per record (on PostgreSQL the difference is large). Use it for statements that
        cannot fail for one record alone (``INSERT ... ON CONFLICT DO NOTHING``): a failure
        at flush fails the whole batch, which is rolled back and retried, and cannot be pinned
        on one record as a failing ``execute`` can.
        """
        self._queued.setdefault(sql, []).append(params)

    def flush(self) -> None:
        """Send the queued writes (the runner calls this before it commits the batch)."""
        queued, self._queued = self._queued, {}
        for sql, rows in queued.items():
            self._connection.executemany(sql, rows)

    @staticmethod
    def idempotency_key(record: Record[Any]) -> str:
        """``topic/partition@offset`` of where the record entered the pipeline.

        A record that came through retry or replay topics carries its original coordinates in
        the ``streams.original.*`` headers; those are used, so the key is the same for every
        copy of one input. Rows with this key as PRIMARY KEY, written with
        ``INSERT ... ON CONFLICT DO NOTHING``, stay single even when a record is replayed.
        """
        topic = headers.get(record.headers, headers.ORIGINAL_TOPIC)
        partition = headers.get_int(record.headers, headers.ORIGINAL_PARTITION)
        offset = headers.get_int(record.headers, headers.ORIGINAL_OFFSET)
        if topic is not None and partition is not None and offset is not None:
            return f"{topic.decode('utf-8', errors='replace')}/{partition}@{offset}"
        return record.coordinates


SinkHandler = Callable[[Record[Any], SinkTransaction], None]


@dataclass(frozen=True)
class SinkSpec:
    """One sink: a consumer group reading ``inputs`` and writing rows through a handler."""

    pipeline: str
    name: str
    inputs: tuple[str, ...]
    input_codec: Codec
    key_codec: Codec
    database: str  # a URL; STREAMS_SINK_DATABASE_URL overrides it at run time
    handler: SinkHandler
    setup_sql: tuple[str, ...] = ()  # CREATE TABLE IF NOT EXISTS ..., run at start-up

    @property
    def group_id(self) -> str:
        return f"{self.pipeline}.{self.name}"


@dataclass
class SinkStats:
    """Counters since the worker started; ``snapshot()`` is what gets logged."""

    consumed: int = 0
    records_committed: int = 0
    batches_committed: int = 0
    batches_rolled_back: int = 0
    offset_conflicts: int = 0
    rewinds: int = 0
    started_at: float = field(default_factory=time.monotonic)

    def snapshot(self) -> dict[str, Any]:
        data = asdict(self)
        elapsed = max(time.monotonic() - data.pop("started_at"), 1e-9)
        data["uptime_s"] = round(elapsed, 1)
        data["committed_per_s"] = round(self.records_committed / elapsed, 1)
        return data


# -- the runner ------------------------------------------------------------------------------


class SinkRunner:
    """Runs one sink in this process until stopped. One instance = one worker slot."""

    def __init__(
        self,
        spec: SinkSpec,
        *,
        slot: int = 0,
        kafka: KafkaSettings | None = None,
        settings: StageSettings | None = None,
        registry: SchemaRegistryClient | None = None,
        sink_settings: SinkSettings | None = None,
        on_stats: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.heartbeat = time.monotonic()  # the loop's last turn; the worker's watchdog reads it
        self.spec = spec
        self.slot = slot
        self.kafka = kafka or KafkaSettings()
        self.settings = settings or StageSettings()
        sink = sink_settings or SinkSettings()
        # fails here, at start-up, on a bad URL
        self.database = Database(
            sink.database_url or spec.database, sqlite_busy_timeout_ms=sink.sqlite_busy_timeout_ms
        )
        if registry is None:
            registry = registry_for(
                [spec.key_codec, spec.input_codec], self.kafka.schema_registry_url
            )
        self._registry = registry
        self._key: Serde[Any] = spec.key_codec.build(registry)
        self._value: Serde[Any] = spec.input_codec.build(registry)
        self.stats = SinkStats()
        self._on_stats = on_stats
        self._db: Connection | None = None
        self._consumer: Consumer | None = None
        self._tx: SinkTransaction | None = None  # the open batch, if any
        self._batch: list[Record[Any]] = []
        self._batch_started = 0.0
        self._next: dict[TP, int] = {}  # next offsets of the open batch
        self._stored: dict[TP, int | None] = {}  # the stored offsets as this worker last saw them
        self._rewind_pending = False
        self._commit_failures = 0
        self._stop_requested = False

    # -- public ----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the batch in flight, commit, and return from ``run`` (SIGTERM calls this)."""
        self._stop_requested = True

    def run(self, *, max_records: int | None = None, idle_timeout_s: float | None = None) -> None:
        """Consume and write until ``request_stop`` (or the optional limits, for tests)."""
        try:
            self._db = self.database.connect()
            self._setup(self._db)
            consumer = self._make_consumer()
            self._consumer = consumer
            consumer.subscribe(
                list(self.spec.inputs),
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            log.info(
                "sink started",
                extra={
                    "sink": self.spec.group_id,
                    "slot": self.slot,
                    "database": self.database.redacted,
                    "inputs": list(self.spec.inputs),
                },
            )
            self._loop(max_records, idle_timeout_s)
            if self._commit(between_batches=True):
                self._commit_kafka(dict(self._stored_offsets()), asynchronous=False)
        finally:
            self._rollback()
            self._emit_stats()
            self._close()

    # -- start-up --------------------------------------------------------------------------

    def _make_consumer(self) -> Consumer:
        # the database holds the offsets; auto.offset.reset only applies where it has none
        return Consumer(
            worker_consumer_config(
                self.kafka, self.settings, group_id=self.spec.group_id, slot=self.slot
            )
        )

    def _setup(self, db: Connection) -> None:
        db.begin()
        try:
            if db.dialect == "postgresql":
                # concurrent CREATE TABLE IF NOT EXISTS can still collide in PostgreSQL's
                # catalogue; workers starting together take turns instead
                db.execute("SELECT pg_advisory_xact_lock(hashtext('streams.sink.setup'))")
            ensure_offsets_table(db)
            for statement in self.spec.setup_sql:
                db.execute(statement)
            db.commit()
        except BaseException:
            db.rollback()
            raise

    # -- the loop --------------------------------------------------------------------------

    def _loop(self, max_records: int | None, idle_timeout_s: float | None) -> None:
        last_stats = last_record = time.monotonic()
        while not self._stop_requested:
            self.heartbeat = time.monotonic()
            messages = self._consume()
            if messages:
                last_record = time.monotonic()
            self._process(messages)
            self._maybe_commit()
            if self._rewind_pending:
                self._rewind()
            if time.monotonic() - last_stats >= self.settings.stats_interval_s:
                self._emit_stats()
                last_stats = time.monotonic()
            if max_records is not None and self.stats.consumed >= max_records:
                break
            if idle_timeout_s is not None and time.monotonic() - last_record > idle_timeout_s:
                break

    def _consume(self) -> list[Message]:
        assert self._consumer is not None  # noqa: S101 - set in run()
        room = self.settings.batch_max_records - len(self._batch)
        count = max(1, min(self.settings.consume_max_records, room))
        timeout = 0.1
        if self._tx is not None:
            left = self.settings.batch_max_ms / 1000 - (time.monotonic() - self._batch_started)
            timeout = max(0.0, min(timeout, left))
        messages = self._consumer.consume(num_messages=count, timeout=timeout)
        if self._rewind_pending:
            # a rebalance callback rolled the batch back inside consume(): what it returned may
            # lie beyond the stored offsets and is read again after the seek
            self._rewind()
            return []
        return messages

    def _process(self, messages: list[Message]) -> None:
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
                    continue
                if error.fatal():
                    raise StageStoppedError(f"consumer fatal error: {error.str()}")
                log.warning("consumer error (librdkafka retries): %s", error.str())
                continue
            if (message.topic(), message.partition()) not in self._stored:
                # returned by a consume() during which the partition was revoked or lost
                continue
            record = self._decode_or_stop(message)
            if self._tx is None:
                self._begin()
            assert self._tx is not None  # noqa: S101
            try:
                self.spec.handler(record, self._tx)
            except Exception as failure:  # noqa: BLE001 - any failure stops on this record
                self._stop_on(record, failure)
            self._batch.append(record)
            self._next[(record.topic, record.partition)] = record.offset + 1
            self.stats.consumed += 1

    def _decode_or_stop(self, message: Message) -> Record[Any]:
        try:
            return self._decode(message)
        except SerializationError as error:
            self._commit()
            coordinates = f"{error.topic}/{error.partition}@{error.offset}"
            raise StageStoppedError(
                f"sink {self.spec.group_id}: cannot decode record {coordinates}: {error.message}"
                f" (raw value: {len(error.raw or b'')} bytes); stopped without skipping it",
                hint="fix the producer of that record or the sink's input codec; the sink "
                "resumes at this record when restarted",
            ) from error

    def _decode(self, message: Message) -> Record[Any]:
        return decode_message(message, key=self._key, value=self._value)

    def _stop_on(self, record: Record[Any], error: Exception) -> None:
        """Keep the partial success: commit the records before ``record``, then stop on it."""
        before = list(self._batch)
        self._rollback()
        self.stats.batches_rolled_back += 1
        failed, cause = record, error
        while before:
            self._begin()
            assert self._tx is not None  # noqa: S101
            for index, earlier in enumerate(before):
                try:
                    self.spec.handler(earlier, self._tx)
                except Exception as again:  # noqa: BLE001 - it failed this time: stop here
                    self._rollback()
                    failed, cause, before = earlier, again, before[:index]
                    break
                self._batch.append(earlier)
                self._next[(earlier.topic, earlier.partition)] = earlier.offset + 1
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

    def _begin(self) -> None:
        assert self._db is not None  # noqa: S101
        self._db.begin()
        self._tx = SinkTransaction(self._db)
        self._batch_started = time.monotonic()

    def _maybe_commit(self) -> None:
        if self._tx is None:
            return
        age_ms = (time.monotonic() - self._batch_started) * 1000
        if len(self._batch) >= self.settings.batch_max_records or (
            age_ms >= self.settings.batch_max_ms
        ):
            self._commit(between_batches=True)

    def _offsets(self, *, between_batches: bool) -> dict[TP, int]:
        """Next offsets to store; past trailing transaction markers where that is safe."""
        offsets = dict(self._next)
        if offsets and between_batches and self._consumer is not None:
            # Only between consume() calls has everything handed to us been processed; then
            # position() differs from our own count only by control markers, and storing it
            # avoids a permanent lag of 1 behind a marker (librdkafka#3917). Inside consume()
            # (a revoke) position() may be past records not yet returned to us.
            positions = self._consumer.position([TopicPartition(t, p) for (t, p) in offsets])
            for tp in positions:
                key = (tp.topic, tp.partition)
                if tp.error is None and tp.offset > offsets[key]:
                    offsets[key] = tp.offset
        return offsets

    def _commit(self, *, between_batches: bool = False) -> bool:
        """Store the batch's offsets and commit; on failure roll back and rewind. True if done."""
        if self._tx is None:
            return True
        assert self._db is not None  # noqa: S101
        offsets = self._offsets(between_batches=between_batches)
        try:
            self._tx.flush()
            for tp, next_offset in offsets.items():
                _store_offset(
                    self._db, self.spec.group_id, tp, next_offset, expected=self._stored.get(tp)
                )
            self._db.commit()
        except _OffsetConflictError as conflict:
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
        self.stats.records_committed += len(self._batch)
        self._stored.update(offsets)
        self._tx = None
        self._batch.clear()
        self._next.clear()
        self._commit_kafka(offsets, asynchronous=True)
        return True

    def _failed(self) -> bool:
        self._rollback()
        self.stats.batches_rolled_back += 1
        self._rewind_pending = True  # the main loop seeks, outside any rebalance callback
        return False

    def _rollback(self) -> None:
        """Drop the open batch (the database forgets its writes)."""
        self._tx = None
        self._batch.clear()
        self._next.clear()
        if self._db is not None and self._db.in_transaction:
            try:
                self._db.rollback()
            except Exception as error:  # noqa: BLE001 - a dead connection rolls back by itself
                log.warning("rollback failed (the database discards the transaction): %s", error)

    def _commit_kafka(self, offsets: Mapping[TP, int], *, asynchronous: bool) -> None:
        """Advisory: lets lag tools see progress; the offsets in the database are the truth."""
        if not offsets or self._consumer is None:
            return
        try:
            listed = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            if asynchronous:
                self._consumer.commit(offsets=listed, asynchronous=True)
            else:
                self._consumer.commit(offsets=listed, asynchronous=False)
        except KafkaException as error:
            log.info("advisory Kafka offset commit failed (harmless): %s", error)

    def _stored_offsets(self) -> Iterable[tuple[TP, int]]:
        return ((tp, offset) for tp, offset in self._stored.items() if offset is not None)

    def _rewind(self, partitions: Sequence[TopicPartition] | None = None) -> None:
        """Seek every assigned partition back to the offset stored in the database."""
        assert self._consumer is not None  # noqa: S101
        assert self._db is not None  # noqa: S101
        self._rewind_pending = False
        targets = list(partitions if partitions is not None else self._consumer.assignment())
        if not targets:
            return
        self.stats.rewinds += 1
        stored = read_offsets(self._db, self.spec.group_id)
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

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Start each new partition at the offset stored in the database, not in Kafka."""
        assert self._db is not None  # noqa: S101
        # may run inside an open batch: the read then sees the batch's own (unstored) offsets,
        # which never concern a partition that is only now assigned
        stored = read_offsets(self._db, self.spec.group_id)
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._stored[key] = stored.get(key)
            tp.offset = stored.get(key, OFFSET_BEGINNING)
        log.info("partitions assigned: %s", partition_names(partitions))
        # with a cooperative assignor, calling incremental_assign here replaces the client's
        # own (which would start at Kafka's committed offsets); it must get the same list
        consumer.incremental_assign(partitions)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions revoked: %s", partition_names(partitions))
        # everything handed to us so far has been processed: commit it while we own the
        # partitions; a failure rolls back and marks every kept partition for a rewind
        self._commit()
        for tp in partitions:
            self._stored.pop((tp.topic, tp.partition), None)

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("partitions lost: %s; rolling back the open batch", partition_names(partitions))
        if self._tx is not None:
            self.stats.batches_rolled_back += 1
            self._rollback()
            self._rewind_pending = True
        for tp in partitions:
            self._stored.pop((tp.topic, tp.partition), None)

    # -- end -------------------------------------------------------------------------------

    def _emit_stats(self) -> None:
        snapshot = {"sink": self.spec.group_id, "slot": self.slot, **self.stats.snapshot()}
        log.info("sink stats", extra={"stats": snapshot})
        if self._on_stats is not None:
            self._on_stats(snapshot)

    def _close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()  # leaves the group: partitions move at once, not at timeout
            self._consumer = None
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._registry is not None:
            self._registry.close()
            self._registry = None
