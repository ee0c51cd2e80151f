"""A replay task as the ledger keeps it: what it reads, where it writes, how far it got.

A task is a redrive (DLQ -> a retry tier, the input or a topic), a copy (a time range of a
topic into another) or a reset (a group's offsets moved). Redrives and copies run as their own
consumer group and transactional producer; their progress (counters and positions) is written
to the ledger *in the same transaction* as the records they move and the offsets they commit,
so what the ledger says is exactly what moved.

Statuses, as SQS names those of its message-move tasks:

===========  ==========================================================================
RUNNING      moving; its process wrote progress within the last 30 s
INTERRUPTED  stopped before its end (Ctrl-C, SIGTERM, a crash, a broker outage): resume it
             with ``--resume TASK``, or cancel it (a RUNNING task silent for 30 s is shown so)
CANCELLING   ``streams dlq cancel`` asked it to stop; it stops at its next commit
CANCELLED    stopped on request; what it moved stays moved (a cancel never reverts)
COMPLETED    every record of its range moved or skipped
FAILED       stopped by an error it cannot get past (``failure`` says which)
===========  ==========================================================================
"""

from __future__ import annotations

import enum
import secrets
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["ACTIVE", "HEARTBEAT_STALE_MS", "Status", "Task", "new_task_id", "status_of"]

# A RUNNING task commits (and writes its progress) at least every transaction, 100 ms by
# default; 30 s without a word means its process is gone (or cut off from the broker).
HEARTBEAT_STALE_MS = 30_000

Kind = Literal["redrive", "copy", "reset"]


class Status(enum.StrEnum):
    RUNNING = "RUNNING"
    INTERRUPTED = "INTERRUPTED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


# what blocks a second task on the same source, and what the lag view marks as replaying
ACTIVE = frozenset({Status.RUNNING, Status.INTERRUPTED, Status.CANCELLING})


class Task(BaseModel):
    """One task, as its latest ledger record holds it (JSON, keyed ``task/<id>``)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    kind: Kind
    pipeline: str
    stage: str  # the consumer group P.S the command named
    source: str  # the topic read: the DLQ, the copy's source; "" for a reset
    # the source's topic id when the task began: a topic deleted and created again under the
    # same name is another topic, whose offsets no earlier task covered (None: not known)
    source_topic_id: str | None = None
    destination: str  # first-retry | input | a topic; "" for a reset
    destination_topic: str | None = None  # the topic of first-retry, or the one named
    keep_partition: bool = False  # write to the record's original partition number
    group: str | None = None  # the task's own consumer group (redrive, copy)
    transactional_id: str | None = None
    affects: list[str] = []  # groups whose input this task changes (for the lag view)
    ranges: dict[int, tuple[int, int]] = {}  # partition -> [start, end): fixed at start
    filters: dict[str, Any] = {}  # streams.replay.selection.Filters.to_dict()
    max_redrives: int = 3
    again: bool = False
    skip_redriven: bool = False
    timestamp: Literal["original", "now"] = "now"
    drop_headers: list[str] = []
    rate: float | None = None
    status: Status = Status.RUNNING
    to_move: int = 0
    skip_planned: dict[str, int] = {}
    moved: int = 0
    skipped: dict[str, int] = {}
    positions: dict[int, int] = {}  # partition -> next offset, as committed with the progress
    started_ms: int = 0
    updated_ms: int = 0
    finished_ms: int | None = None
    failure: str | None = None
    # a reset: one entry per partition, {"topic", "partition", "before", "after"}
    offsets: list[dict[str, Any]] = []

    def covered_end(self, partition: int) -> int:
        """Where this task's work on ``partition`` ends: all of it once COMPLETED."""
        start, end = self.ranges.get(partition, (0, 0))
        if self.status is Status.COMPLETED:
            return end
        return min(end, self.positions.get(partition, start))

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes) -> Task:
        return cls.model_validate_json(data)


def status_of(task: Task, *, cancel_requested: bool, now_ms: int) -> Status:
    """The status to show: the stored one, corrected for a cancel request and a silent task."""
    stored = task.status
    if stored in {Status.RUNNING, Status.INTERRUPTED} and cancel_requested:
        return Status.CANCELLING if stored is Status.RUNNING else Status.CANCELLED
    if stored is Status.RUNNING and now_ms - task.updated_ms > HEARTBEAT_STALE_MS:
        return Status.INTERRUPTED
    return stored


def new_task_id(kind: Kind, now_ms: int) -> str:
    """``redrive-20261201-234100-3f2a``: the kind, the UTC start time, 4 random hex digits."""
    moment = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    return f"{kind}-{moment:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
