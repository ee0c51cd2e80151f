"""``streams dlq status|cancel|tasks``, and ``active_tasks`` / ``ReplayMarks`` for the lag view.

A task's view has SQS's fields: status, moved, to move (fixed when the task began), skipped by
reason, rate, start time, failure reason. Cancel never reverts: the task stops at its next
transaction boundary, and what it moved stays moved.

``ReplayMarks`` is the lag view's ``streams.lag.ReplaySource``: ``streams lag`` and ``streams
monitor`` give it to their ``LagMonitor``, which asks it once per sample; it follows the
ledger (``LedgerFollower``), so a sample costs no ledger request when nothing changed, and a
missing or unreadable ledger means no marks, never an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streams.config import KafkaSettings
from streams.exceptions import BadArgumentError, RefusedError
from streams.lag import ReplayMark
from streams.pipeline import Pipeline
from streams.replay.ledger import (
    LedgerFollower,
    LedgerState,
    read_ledger,
    request_cancel,
    write_task,
)
from streams.replay.mover import now_ms
from streams.replay.task import ACTIVE, Status, Task
from streams.replay.timespec import format_ms

__all__ = [
    "ActiveTask",
    "ReplayMarks",
    "TaskView",
    "active_in",
    "active_tasks",
    "cancel_task",
    "list_tasks",
    "task_status",
]

# A reset changes where a group reads at once; the lag view marks the group for this long after
# it (the backlog it made is the reset's, not a stalled stage).
RESET_WINDOW_MS = 600_000


@dataclass(frozen=True)
class TaskView:
    """A task as ``status`` and ``tasks`` show it (its status corrected for cancel/silence)."""

    task: Task
    status: Status

    def to_dict(self) -> dict[str, Any]:
        t = self.task
        return {
            "task": t.id,
            "kind": t.kind,
            "status": self.status.value,
            "stage": t.stage,
            "source": t.source,
            "destination": t.destination,
            "destination_topic": t.destination_topic,
            "moved": t.moved,
            "to_move": t.to_move,
            "skipped": dict(t.skipped),
            "skip_planned": dict(t.skip_planned),
            "rate": t.rate,
            "started": format_ms(t.started_ms),
            "updated": format_ms(t.updated_ms),
            "finished": format_ms(t.finished_ms),
            "failure": t.failure,
            "ranges": {str(p): list(r) for p, r in sorted(t.ranges.items())},
            "positions": {str(p): o for p, o in sorted(t.positions.items())},
            "filters": t.filters,
            "offsets": t.offsets,
        }


def _view(ledger: LedgerState, task: Task) -> TaskView:
    return TaskView(task, ledger.status(task, now_ms()))


def list_tasks(pipeline: Pipeline, stage: str, *, kafka: KafkaSettings) -> list[TaskView]:
    """Every task of the stage the ledger holds, newest first."""
    group = pipeline.component(stage).group_id
    ledger = read_ledger(kafka)
    return [_view(ledger, t) for t in ledger.recent(stage=group)]


def _owned(pipeline: Pipeline, stage: str, ledger: LedgerState, task_id: str) -> Task:
    group = pipeline.component(stage).group_id
    task = ledger.get(task_id)
    if task.stage != group:
        raise BadArgumentError(f"task {task_id} belongs to {task.stage}, not {group}")
    return task


def task_status(pipeline: Pipeline, stage: str, task_id: str, *, kafka: KafkaSettings) -> TaskView:
    ledger = read_ledger(kafka)
    return _view(ledger, _owned(pipeline, stage, ledger, task_id))


def cancel_task(pipeline: Pipeline, stage: str, task_id: str, *, kafka: KafkaSettings) -> TaskView:
    """Ask a running task to stop (CANCELLING); an interrupted one is CANCELLED at once."""
    ledger = read_ledger(kafka)
    task = _owned(pipeline, stage, ledger, task_id)
    status = ledger.status(task, now_ms())
    if status not in ACTIVE:
        raise RefusedError(
            f"task {task_id} is {status.value}: only a RUNNING or INTERRUPTED task can be "
            "cancelled",
            hint="a cancel never reverts what a task moved",
        )
    stamp = now_ms()
    request_cancel(kafka, task_id, now_ms=stamp)
    if status is Status.INTERRUPTED:
        # nobody runs it: settle it now (a resume of it would see the cancel and stop too)
        task = task.model_copy(
            update={"status": Status.CANCELLED, "updated_ms": stamp, "finished_ms": stamp}
        )
        write_task(kafka, task)
        return TaskView(task, Status.CANCELLED)
    return TaskView(task, Status.CANCELLING)


@dataclass(frozen=True)
class ActiveTask:
    """A group whose input a replay task is changing now (or a reset changed lately)."""

    group: str
    task: str
    kind: str
    status: str
    moved: int
    to_move: int
    started_ms: int
    updated_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "task": self.task,
            "kind": self.kind,
            "status": self.status,
            "moved": self.moved,
            "to_move": self.to_move,
            "started_ms": self.started_ms,
            "updated_ms": self.updated_ms,
        }

    def mark(self) -> ReplayMark:
        """The task as the lag view marks the group (a reset: until its window ends)."""
        until = self.started_ms + RESET_WINDOW_MS if self.kind == "reset" else None
        return ReplayMark(
            task=self.task,
            kind=self.kind,
            status=self.status,
            moved=self.moved,
            to_move=self.to_move,
            started_ms=self.started_ms,
            updated_ms=self.updated_ms,
            until_ms=until,
        )


def active_tasks(kafka: KafkaSettings, *, now: int | None = None) -> list[ActiveTask]:
    """The groups being redriven into or copied into now, or reset in the last 10 minutes.

    For the lag view: a group listed here has a backlog a task made on purpose; the view keeps
    its status and says which task explains it (``streams.lag.marks``). One entry per (group,
    task). Reads the whole ledger: a reader asked every few seconds uses ``ReplayMarks``.
    """
    return active_in(read_ledger(kafka), now_ms() if now is None else now)


def active_in(ledger: LedgerState, stamp: int) -> list[ActiveTask]:
    """``active_tasks`` of a ledger already read, at ``stamp`` (ms). Pure: no broker."""
    found = []
    for task in ledger.recent():
        status = ledger.status(task, stamp)
        recent_reset = task.kind == "reset" and stamp - task.started_ms <= RESET_WINDOW_MS
        if status not in ACTIVE and not recent_reset:
            continue
        found += [
            ActiveTask(
                group=group,
                task=task.id,
                kind=task.kind,
                status=status.value,
                moved=task.moved,
                to_move=task.to_move,
                started_ms=task.started_ms,
                updated_ms=task.updated_ms,
            )
            for group in task.affects
        ]
    return found


class ReplayMarks:
    """The lag view's replay marks (``streams.lag.ReplaySource``), from the followed ledger."""

    def __init__(self, kafka: KafkaSettings, *, follower: LedgerFollower | None = None) -> None:
        self._follower = follower if follower is not None else LedgerFollower(kafka)

    def marks(self, now_ms: int) -> Mapping[str, Sequence[ReplayMark]]:
        """group -> the tasks affecting it at ``now_ms``; empty without a readable ledger."""
        found: dict[str, list[ReplayMark]] = {}
        for active in active_in(self._follower.poll(), now_ms):
            found.setdefault(active.group, []).append(active.mark())
        return found

    def reconnect(self) -> None:
        self._follower.reconnect()

    def close(self) -> None:
        self._follower.close()
