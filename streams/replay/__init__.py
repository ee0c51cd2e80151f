"""Replaying topics: DLQ inspection and exactly-once redrive, offset resets, time-range copies.

Every operation is planned first and changes nothing until executed:

==========================  ====================================================================
``summarize_dlq``           ``streams dlq ls``: counts per reason and error class, per partition
``show_dlq``                ``streams dlq show``: the records, decoded, with every header
``plan_redrive``            ``streams dlq redrive``: what a redrive would move and skip
``execute``                 ... and running it: its own consumer group, one transaction for the
                            records, its DLQ offsets and its ledger record; resumable
``plan_resume``             ``--resume TASK``: the rest of an interrupted redrive
``plan_reset``              ``streams replay reset``: a group's offsets, kafka-consumer-groups'
``execute_reset``           vocabulary; a SQL sink's offsets rewritten in its database
``plan_copy``               ``streams replay copy``: a time range of a topic into another,
``execute_copy``            exactly once, resumable
``list_tasks``              ``streams dlq tasks|status|cancel``: the ledger's tasks, SQS-style
``task_status``
``cancel_task``
``active_tasks``            the groups a task is redriving into, copying into, or reset lately:
``ReplayMarks``             the lag view marks them and says which status a task explains
==========================  ====================================================================

The ledger is the compacted topic ``_streams.replay`` (``streams topics create`` makes it):
one record per task with its range, its rules and its progress. It is what refuses a second
redrive of what was redriven already, and what stops a record that fails forever
(``--max-redrives``). Modules: ``timespec`` and ``selection`` (what the operator typed),
``letters`` (the three DLQ header formats, the headers a redriven record carries), ``rules``
(a redrive's decision per record), ``task`` and ``ledger`` (the task and where it is kept),
``scan`` (read-only reads), ``mover`` and ``runner`` (the exactly-once loop), ``redrive``,
``copy``, ``reset``, ``inspect`` and ``tasks`` (the operations).
"""

from __future__ import annotations

from streams.replay.copy import CopyRequest, execute_copy, plan_copy, plan_copy_resume
from streams.replay.inspect import DlqSummary, ShownRecord, show_dlq, summarize_dlq
from streams.replay.plan import PartitionPlan, Plan
from streams.replay.redrive import RedriveRequest, execute, plan_redrive, plan_resume
from streams.replay.reset import (
    ResetPlan,
    ResetRequest,
    execute_reset,
    parse_scope,
    plan_reset,
    read_plan_file,
)
from streams.replay.runner import Stopper
from streams.replay.scan import NO_PROGRESS, Progress
from streams.replay.selection import Filters, parse_header_filters, parse_offsets
from streams.replay.task import Status, Task
from streams.replay.tasks import (
    ActiveTask,
    ReplayMarks,
    TaskView,
    active_tasks,
    cancel_task,
    list_tasks,
    task_status,
)
from streams.replay.timespec import format_ms, parse_duration, parse_time

__all__ = [
    "NO_PROGRESS",
    "ActiveTask",
    "CopyRequest",
    "DlqSummary",
    "Filters",
    "PartitionPlan",
    "Plan",
    "Progress",
    "RedriveRequest",
    "ReplayMarks",
    "ResetPlan",
    "ResetRequest",
    "ShownRecord",
    "Status",
    "Stopper",
    "Task",
    "TaskView",
    "active_tasks",
    "cancel_task",
    "execute",
    "execute_copy",
    "execute_reset",
    "format_ms",
    "list_tasks",
    "parse_duration",
    "parse_header_filters",
    "parse_offsets",
    "parse_scope",
    "parse_time",
    "plan_copy",
    "plan_copy_resume",
    "plan_redrive",
    "plan_reset",
    "plan_resume",
    "read_plan_file",
    "show_dlq",
    "summarize_dlq",
    "task_status",
]
