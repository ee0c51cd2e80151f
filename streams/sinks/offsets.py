"""The sink's offsets, stored in its own database next to the rows, written compare-and-set.

Table ``streams_sink_offsets`` (group_id, topic, partition, next_offset). Each batch writes the
next offset of every partition it touched *only if* the stored value is still the one this
worker last saw: a worker that lost its partitions and still runs (a zombie) has its batch
rolled back instead of overwriting the newer owner's progress.
"""

from __future__ import annotations

from streams.database import Connection
from streams.offsets import TP

__all__ = [
    "OFFSETS_TABLE",
    "OffsetConflictError",
    "ensure_offsets_table",
    "overwrite_offset",
    "read_offsets",
    "store_offset",
]

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


class OffsetConflictError(Exception):
    """The stored offset is not the one this worker last saw: someone else committed it."""


def ensure_offsets_table(connection: Connection) -> None:
    connection.execute(_CREATE_OFFSETS)


def read_offsets(connection: Connection, group_id: str) -> dict[TP, int]:
    """The stored next offset of every partition of ``group_id``: where a restart resumes."""
    result = connection.execute(_SELECT_OFFSETS, {"group_id": group_id})
    return {(str(topic), int(partition)): int(offset) for topic, partition, offset in result.rows}


def store_offset(
    connection: Connection, group_id: str, tp: TP, next_offset: int, *, expected: int | None
) -> None:
    """Write ``next_offset`` only if the stored value is still ``expected`` (None: no row)."""
    values = {"group_id": group_id, "topic": tp[0], "partition": tp[1], "next_offset": next_offset}
    if expected is None:
        changed = connection.execute(_INSERT_OFFSET, values).rowcount
    else:
        changed = connection.execute(_UPDATE_OFFSET, {**values, "expected": expected}).rowcount
    if changed != 1:
        raise OffsetConflictError(
            f"{tp[0]}/{tp[1]}: stored offset is no longer {expected} (group {group_id})"
        )


def overwrite_offset(connection: Connection, group_id: str, tp: TP, next_offset: int) -> None:
    """Set the stored offset whatever it holds (``streams replay reset`` of a stopped sink).

    Run it inside the caller's transaction, one call per partition, so that a reset moves
    every partition or none.
    """
    values = {"group_id": group_id, "topic": tp[0], "partition": tp[1], "next_offset": next_offset}
    changed = connection.execute(
        "UPDATE streams_sink_offsets SET next_offset = :next_offset WHERE group_id = :group_id "
        'AND topic = :topic AND "partition" = :partition',
        values,
    ).rowcount
    if changed == 0:
        connection.execute(_INSERT_OFFSET, values)
