"""A sink worker: its database and consumer, built when it starts, and the loop over batches."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer

from streams.codecs import registry_for
from streams.config import KafkaSettings, SinkSettings, StageSettings
from streams.database import Connection, Database
from streams.kafka.clients import worker_consumer_config
from streams.loop import WorkerLoop
from streams.serde import Serde
from streams.sinks.batch import SqlBatch
from streams.sinks.offsets import ensure_offsets_table
from streams.spec import SinkSpec
from streams.stats import SinkStats

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

__all__ = ["SinkRunner"]

log = logging.getLogger("streams.sink")


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
        self.loop = WorkerLoop(self.settings)
        self._on_stats = on_stats
        self._logged_consumed = -1

    @property
    def heartbeat(self) -> float:
        """When the loop last turned (monotonic seconds); the worker's watchdog reads it."""
        return self.loop.heartbeat

    @property
    def ready(self) -> bool:
        """Joined its group (first assignment received) with its clients set up."""
        return self.loop.joined

    def request_stop(self) -> None:
        """Finish the batch in flight, commit, and return from ``run`` (SIGTERM calls this)."""
        self.loop.request_stop()

    def run(self, *, max_records: int | None = None, idle_timeout_s: float | None = None) -> None:
        """Consume and write until ``request_stop`` (or the optional limits, for tests)."""
        db = self.database.connect()
        try:
            self._setup(db)
            consumer = self._make_consumer()
        except BaseException:
            db.close()
            raise
        batch = self._batch(db, consumer)
        log.info(
            "sink started",
            extra={
                "sink": self.spec.group_id,
                "slot": self.slot,
                "database": self.database.redacted,
                "inputs": list(self.spec.inputs),
            },
        )
        try:
            self.loop.run(
                consumer,
                batch,
                topics=self.spec.subscriptions,
                emit_stats=self._emit_stats,
                max_records=max_records,
                idle_timeout_s=idle_timeout_s,
            )
        finally:
            if self._registry is not None:
                self._registry.close()
                self._registry = None

    def _batch(self, db: Connection, consumer: Consumer) -> SqlBatch:
        return SqlBatch(
            spec=self.spec,
            key=self._key,
            value=self._value,
            db=db,
            consumer=consumer,
            settings=self.settings,
            stats=self.stats,
        )

    def _make_consumer(self) -> Consumer:
        # the database holds the offsets; auto.offset.reset only applies where it has none
        return Consumer(
            worker_consumer_config(
                self.kafka,
                self.settings,
                group_id=self.spec.group_id,
                client_id=self.spec.client_id(self.slot),
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

    def _emit_stats(self) -> None:
        snapshot = self.stats.snapshot(group=self.spec.group_id, slot=self.slot)
        moved = self.stats.consumed != self._logged_consumed  # INFO only when something moved
        self._logged_consumed = self.stats.consumed
        log.log(logging.INFO if moved else logging.DEBUG, "sink stats", extra={"stats": snapshot})
        if self._on_stats is not None:
            self._on_stats(snapshot)
