"""``streams dlq status|cancel|tasks``, and ``active_tasks`` for the lag view.

A task's view has SQS's fields: status, moved, to move (fixed when the task began), skipped by
reason, rate, start time, failure reason. Cancel never reverts: the task stops at its next
transaction boundary, and what it moved stays moved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streams.config import KafkaSettings
from streams.exceptions import BadArgumentError, RefusedError
from streams.pipeline import Pipeline
from streams.replay.ledger import LedgerState, read_ledger, request_cancel, write_task
from streams.replay.mover import now_ms
from streams.replay.task import ACTIVE, Status, Task
from streams.replay.timespec import format_ms

__all__ = ["ActiveTask", "TaskView", "active_tasks", "cancel_task", "list_tasks", "task_status"]

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


def active_tasks(kafka: KafkaSettings, *, now: int | None = None) -> list[ActiveTask]:
    """The groups being redriven into or copied into now, or reset in the last 10 minutes.

    For the lag view: a group listed here has a backlog a task made on purpose; show the task
    (``moved``/``to_move``) instead of a STALL or REWIND. One entry per (group, task).
    """
    stamp = now_ms() if now is None else now
    ledger = read_ledger(kafka)
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
