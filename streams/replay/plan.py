"""A task's plan: per partition, the offsets it reads and what it would do with them.

The dry run of every replay command prints a plan and changes nothing; ``--execute`` runs the
same plan. A plan that a safety rule refuses carries its ``refusals``: the command then exits
3, dry run or not, so that a script learns it before it executes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from streams.exceptions import TopologyError
from streams.pipeline import Pipeline, StageSpec
from streams.replay.task import Task

__all__ = ["PartitionPlan", "Plan", "require_stage"]


def require_stage(pipeline: Pipeline, name: str) -> StageSpec:
    """The stage called ``name`` (a sink has no DLQ: said so, with a hint)."""
    found = pipeline.component(name)
    if not isinstance(found, StageSpec):
        stages = ", ".join(c.name for c in pipeline.stages if isinstance(c, StageSpec))
        raise TopologyError(
            f"{name!r} of pipeline {pipeline.name!r} is a sink: it has no DLQ",
            hint=f"name a stage ({stages or 'none'}); `streams replay reset` resets a sink",
        )
    return found


@dataclass
class PartitionPlan:
    """One partition of a plan: [start, end) and what its records become."""

    partition: int
    start: int
    end: int
    selected: int = 0
    to_move: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    first: int | None = None  # the first and last selected offsets
    last: int | None = None

    def note(self, offset: int, verdict: str | None) -> None:
        """Count one record of this partition: ``move``, a skip reason, or None."""
        if verdict is None:
            return
        self.selected += 1
        if self.first is None:
            self.first = offset
        self.last = offset
        if verdict == "move":
            self.to_move += 1
        else:
            self.skipped[verdict] += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "from": self.start,
            "to": self.end,
            "selected": self.selected,
            "to_move": self.to_move,
            "skipped": dict(self.skipped),
            "first_selected": self.first,
            "last_selected": self.last,
        }


@dataclass
class Plan:
    """What a task would do, partition by partition; ``task`` is the task it would start."""

    task: Task
    partitions: list[PartitionPlan]
    refusals: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # topic -> the partitions written (None: the partitioner's choice)
    writes: dict[str, set[int | None]] = field(default_factory=dict)
    resumed: bool = False

    @property
    def to_move(self) -> int:
        return sum(p.to_move for p in self.partitions)

    @property
    def selected(self) -> int:
        return sum(p.selected for p in self.partitions)

    @property
    def skipped(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for p in self.partitions:
            total.update(p.skipped)
        return total

    @property
    def refused(self) -> bool:
        return bool(self.refusals)

    def to_dict(self) -> dict[str, Any]:
        task = self.task
        return {
            "task": task.id,
            "kind": task.kind,
            "resumed": self.resumed,
            "stage": task.stage,
            "source": task.source,
            "destination": task.destination,
            "destination_topic": task.destination_topic,
            "selected": self.selected,
            "to_move": self.to_move,
            "skipped": dict(self.skipped),
            "partitions": [p.to_dict() for p in self.partitions],
            "writes": {t: sorted(p for p in ps if p is not None) for t, ps in self.writes.items()},
            "refused": self.refused,
            "refusals": self.refusals,
            "hints": self.hints,
            "notes": self.notes,
            "rate": task.rate,
            "filters": task.filters,
        }
