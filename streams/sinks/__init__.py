"""Exactly-once from Kafka into a SQL database: the rows and the input offsets in one DB commit.

::

    @pipeline.sink("store", inputs=["orders.placed"], input=codecs.json(OrderPlaced),
                   database="postgresql://app@db:5432/shop",  # STREAMS_SINK_DATABASE_URL wins
                   setup_sql=["CREATE TABLE IF NOT EXISTS orders "
                              "(origin TEXT PRIMARY KEY, total BIGINT)"])
    def store_order(record: Record[OrderPlaced], tx: SinkTransaction) -> None:
        tx.execute(
            "INSERT INTO orders (origin, total) VALUES (:origin, :total) ON CONFLICT DO NOTHING",
            {"origin": record.idempotency_key, "total": record.value.total},
        )

Kafka transactions cannot cover a database (a transaction spans Kafka partitions only), so a
sink does not use them: the offsets live in the database itself, in ``streams_sink_offsets``,
and each batch is one database transaction holding the handler's writes *and* the next offset
of every partition it touched. A crash at any point leaves either both or neither; a restart
reads the offsets from the database (in ``on_assign``) and resumes exactly there. The offsets
are also committed to Kafka after each database commit, but only so that lag tools see
progress: they are advisory.

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
- partitions revoked: the open batch is committed first; partitions lost: it is rolled back;
- a fatal consumer error: the worker exits 1 and the supervisor restarts it.

Modules: ``runner`` (``SinkRunner``: database, consumer, loop), ``batch`` (``SqlBatch``: the
open database transaction), ``offsets`` (the offsets table, compare-and-set), ``records``
(messages to Records with few calls per message: raw and text codecs inline, what a batch
keeps to redo its records). How ``tx.add`` rows are sent (positional, ``COPY`` on
PostgreSQL) is ``SinkTransaction``'s, in ``streams.database``.

The handler may run more than once for a record (a rolled-back batch is redone), but its writes
are committed once. Writes to anything other than ``tx`` are not covered: key them with
``tx.idempotency_key(record)`` if they must happen once.
"""

from __future__ import annotations

from streams.config import SinkSettings
from streams.database import Connection, Database, Result, SinkTransaction
from streams.sinks.offsets import (
    OFFSETS_TABLE,
    OffsetConflictError,
    ensure_offsets_table,
    overwrite_offset,
    read_offsets,
    store_offset,
)
from streams.sinks.runner import SinkRunner
from streams.spec import SinkHandler, SinkSpec
from streams.stats import SinkStats

__all__ = [
    "OFFSETS_TABLE",
    "Connection",
    "Database",
    "OffsetConflictError",
    "Result",
    "SinkHandler",
    "SinkRunner",
    "SinkSettings",
    "SinkSpec",
    "SinkStats",
    "SinkTransaction",
    "ensure_offsets_table",
    "overwrite_offset",
    "read_offsets",
    "store_offset",
]
