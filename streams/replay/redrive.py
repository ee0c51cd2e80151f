"""``streams dlq redrive``: plan a redrive of a stage's DLQ, then run it exactly once.

``plan_redrive`` reads the ledger and the DLQ range (end offsets fixed now) and judges every
record with the task's rules (``streams.replay.rules``): the plan says, per partition, what
would move and what would be skipped, and lists the refusals of the safety rules. Nothing is
written. ``execute`` records the task in the ledger and runs it (``streams.replay.runner``);
``plan_resume`` picks an interrupted task up where its last transaction ended.

Safety rules (each refuses the whole task, exit 3):

- another redrive of the same DLQ is running or interrupted (one task per DLQ, as SQS);
- selected records were redriven before, unless ``--again`` or ``--skip-redriven``;
- a destination topic is not one of the pipeline's own, unless ``--allow-topic`` names it;
- a destination topic, or the partition a record names (``--to input``), does not exist.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import Message

from streams.config import KafkaSettings, StageSettings
from streams.exceptions import BadArgumentError, RefusedError, TopologyError
from streams.pipeline import Pipeline, StageSpec
from streams.replay.destinations import DestinationLimits
from streams.replay.ledger import LedgerState, read_ledger, require_ledger
from streams.replay.letters import Letter, read_letter
from streams.replay.mover import now_ms
from streams.replay.plan import PartitionPlan, Plan, require_stage
from streams.replay.rules import (
    ALREADY_REDRIVEN,
    MOVE,
    Move,
    RedriveHistory,
    RedriveRules,
    verdict,
)
from streams.replay.runner import Stopper, run_task
from streams.replay.scan import NO_PROGRESS, Progress, Reader
from streams.replay.selection import Filters, Ranges, restrict
from streams.replay.task import ACTIVE, Status, Task, new_task_id

__all__ = ["RedriveDecider", "RedriveRequest", "execute", "plan_redrive", "plan_resume"]

_HINTS = {
    "unroutable": "records without valid streams.original.* (or Spring/Connect) coordinates "
    "cannot be routed: read them with `streams dlq show --offsets P:O` and produce them by hand",
    "max-redrives": "records redriven --max-redrives times already keep failing: inspect them "
    "with `streams dlq show`; raise --max-redrives only once the cause is fixed",
    "truncated": "records cut to fit the DLQ (reason unroutable) are whole in their input topic "
    "until retention: `streams replay reset` the stage to reprocess them",
    "too-large": "records larger than their destination's max.message.bytes: raise it, or "
    "redrive them elsewhere (--to TOPIC)",
    "too-old": "records whose original timestamp the destination would refuse or delete at "
    "once (retention.ms): redrive them with --timestamp now",
    ALREADY_REDRIVEN: "left out by --skip-redriven: the ledger records them as redriven",
}


@dataclass(frozen=True)
class RedriveRequest:
    """What the operator asked for (the options of ``streams dlq redrive``)."""

    to: str = "first-retry"  # first-retry | input | a topic
    dlq: str | None = None  # another DLQ to read (a Spring or Connect one); default the stage's
    filters: Filters = field(default_factory=Filters)
    offsets: dict[int, tuple[int, int | None]] = field(default_factory=dict)
    max_records: int | None = None
    max_redrives: int = 3
    again: bool = False
    skip_redriven: bool = False
    allow_topics: tuple[str, ...] = ()
    rate: float | None = None
    timestamp: str = "now"
    drop_headers: tuple[str, ...] = ()


class RedriveDecider:
    """Judges the DLQ records of one task: verdict, the record to write, earlier movers."""

    def __init__(
        self, rules: RedriveRules, history: RedriveHistory, limits: DestinationLimits
    ) -> None:
        self._rules = rules
        self._history = history or None  # None: no earlier task to ask, per record
        self._limits = limits

    def judge(self, message: Message) -> tuple[Letter, str | None, Move | None, list[str]]:
        letter = read_letter(message)
        movers = [] if self._history is None else self._history.movers(letter)
        found = verdict(letter, self._rules, len(movers))
        if found != MOVE:
            return letter, found, None, movers
        move = self._rules.move(letter, len(movers))
        refused = self._limits.check(move, now_ms())
        if refused is not None:
            return letter, refused, None, movers
        return letter, found, move, movers

    def __call__(self, message: Message) -> Move | str | None:
        """``judge`` for the task: the move, else the skip reason (None: not selected)."""
        letter = read_letter(message)
        previous = 0 if self._history is None else len(self._history.movers(letter))
        found = verdict(letter, self._rules, previous)
        if found != MOVE:
            return found
        move = self._rules.move(letter, previous)
        return self._limits.check(move, now_ms()) or move


def _destination(spec: StageSpec, request: RedriveRequest) -> tuple[str, str | None, bool]:
    """(kind, topic, keep_partition) of ``--to``."""
    if request.to == "first-retry":
        if not spec.retry_topics:
            raise BadArgumentError(
                f"stage {spec.group_id} has no retry tier",
                hint="redrive to its input instead: --to input",
            )
        return "first-retry", spec.retry_topics[0], spec.retry.key_ordered
    if request.to == "input":
        return "input", None, True
    return "topic", request.to, False


def _draft(pipeline: Pipeline, spec: StageSpec, request: RedriveRequest, source: str) -> Task:
    kind, topic, keep = _destination(spec, request)
    stamp = now_ms()
    task_id = new_task_id("redrive", stamp)
    affects = [spec.group_id] if kind != "topic" else []
    affects += [c.group_id for c in pipeline.stages if topic in c.inputs and c is not spec]
    return Task(
        id=task_id,
        kind="redrive",
        pipeline=pipeline.name,
        stage=spec.group_id,
        source=source,
        destination=kind,
        destination_topic=topic,
        keep_partition=keep,
        group=f"_streams.redrive.{task_id}",
        transactional_id=f"_streams.redrive.{source}",
        affects=affects,
        filters=request.filters.to_dict(),
        max_redrives=request.max_redrives,
        again=request.again,
        skip_redriven=request.skip_redriven,
        timestamp="now" if request.timestamp == "now" else "original",
        drop_headers=list(request.drop_headers),
        rate=request.rate,
        started_ms=stamp,
        updated_ms=stamp,
    )


def plan_redrive(
    pipeline: Pipeline,
    stage: str,
    request: RedriveRequest,
    *,
    kafka: KafkaSettings,
    progress: Progress = NO_PROGRESS,
) -> Plan:
    """What ``request`` would do, read from the broker; nothing is written."""
    spec = require_stage(pipeline, stage)
    source = request.dlq or spec.dlq_topic
    task = _draft(pipeline, spec, request, source)
    with Reader(kafka) as reader:
        count = reader.partitions(source)
        if count is None:
            raise TopologyError(
                f"DLQ topic {source} does not exist",
                hint=f"create the pipeline's topics: streams topics create MODULE:{pipeline.name}"
                if request.dlq is None
                else "check the name given to --dlq",
            )
        ranges = restrict(reader.watermarks(source, count), request.offsets)
        task = task.model_copy(update={"source_topic_id": reader.topic_id(source)})
        ledger = read_ledger(kafka)
        limits = DestinationLimits(
            kafka, [task.destination_topic] if task.destination_topic else []
        )
        plan, kept = _scan(
            reader,
            task.model_copy(update={"ranges": ranges}),
            ledger,
            limits,
            progress,
            keep=request.max_records,
        )
        if request.max_records is not None and plan.to_move > request.max_records:
            cut = _cut(ranges, kept, request.max_records)
            plan, _ = _scan(
                reader, task.model_copy(update={"ranges": cut}), ledger, limits, progress, keep=None
            )
        _refuse(plan, pipeline, request, reader, ledger)
    plan.task = plan.task.model_copy(
        update={"to_move": plan.to_move, "skip_planned": dict(plan.skipped)}
    )
    return plan


def _scan(
    reader: Reader,
    task: Task,
    ledger: LedgerState,
    limits: DestinationLimits,
    progress: Progress,
    *,
    keep: int | None,
) -> tuple[Plan, dict[int, list[tuple[int, int]]]]:
    """Judge every record of ``task.ranges``; the plan, and (ts, offset) of the first moves."""
    decider = RedriveDecider(
        RedriveRules.of(task),
        RedriveHistory(ledger.tasks.values(), source=task.source, topic_id=task.source_topic_id),
        limits,
    )
    parts = {p: PartitionPlan(p, start, end) for p, (start, end) in sorted(task.ranges.items())}
    plan = Plan(task=task, partitions=list(parts.values()))
    movers: Counter[str] = Counter()
    kept: dict[int, list[tuple[int, int]]] = {p: [] for p in parts}
    examples: list[str] = []

    def on_record(message: Message) -> None:
        letter, found, move, by = decider.judge(message)
        parts[letter.partition].note(letter.offset, found)
        if move is not None:
            plan.writes.setdefault(move.topic, set()).add(move.partition)
            mine = kept[letter.partition]
            if keep is not None and len(mine) <= keep:
                mine.append((letter.timestamp_ms, letter.offset))
        elif found == ALREADY_REDRIVEN:
            movers.update(by)
        elif found == "unroutable" and len(examples) < 3:  # noqa: PLR2004 - a few examples
            examples.append(letter.coordinates)

    progress.start(f"reading {task.source}", total=sum(e - s for s, e in task.ranges.values()))
    reader.read_range(task.source, task.ranges, on_record, progress=progress)
    progress.finish()
    _conclude(plan, movers, examples)
    return plan, kept


def _conclude(plan: Plan, movers: Counter[str], examples: list[str]) -> None:
    """The notes, hints and ledger refusals of a scanned plan."""
    task = plan.task
    for reason, count in sorted(plan.skipped.items()):
        if reason == ALREADY_REDRIVEN and not task.skip_redriven:
            continue
        plan.notes.append(f"{count} records skipped: {reason}")
        plan.hints.append(_HINTS.get(reason, reason))
    if examples:
        plan.notes.append(f"unroutable records, e.g. {', '.join(examples)}")
    if plan.skipped["too-old"]:
        plan.refusals.append(
            f"{plan.skipped['too-old']} records would keep timestamps their destination deletes "
            "or refuses (older than its retention.ms)"
        )
    if plan.skipped[ALREADY_REDRIVEN] and not (task.again or task.skip_redriven):
        tasks = ", ".join(f"{t} ({n})" for t, n in movers.most_common(5))
        plan.refusals.append(
            f"{plan.skipped[ALREADY_REDRIVEN]} selected records were redriven before, by {tasks}"
        )
        plan.hints.append(
            "pass --again to redrive them once more (their redrive count goes up), "
            "--skip-redriven to leave them out, or narrow the selection (--offsets, filters)"
        )


def _cut(ranges: Ranges, kept: dict[int, list[tuple[int, int]]], limit: int) -> Ranges:
    """The ranges cut so that the ``limit`` oldest moves (DLQ timestamp) are left, exactly.

    A k-way merge by timestamp over each partition's moves in offset order takes a prefix of
    every partition; each range ends at its first move not taken.
    """
    heads = [(moves[0][0], p, 0) for p, moves in kept.items() if moves]
    heapq.heapify(heads)
    taken = dict.fromkeys(kept, 0)
    for _ in range(limit):
        if not heads:
            break
        _ts, p, index = heapq.heappop(heads)
        taken[p] = index + 1
        if index + 1 < len(kept[p]):
            heapq.heappush(heads, (kept[p][index + 1][0], p, index + 1))
    cut = dict(ranges)
    for p, moves in kept.items():
        if taken[p] < len(moves):
            cut[p] = (ranges[p][0], moves[taken[p]][1])
    return cut


def _active_on(ledger: LedgerState, source: str, *, exclude: str | None = None) -> list[Task]:
    stamp = now_ms()
    return [
        t
        for t in ledger.recent()
        if t.kind == "redrive"
        and t.source == source
        and t.id != exclude
        and ledger.status(t, stamp) in ACTIVE
    ]


def _refuse(
    plan: Plan, pipeline: Pipeline, request: RedriveRequest, reader: Reader, ledger: LedgerState
) -> None:
    """Add the refusals of the safety rules (see the module docstring) to ``plan``."""
    task = plan.task
    for other in _active_on(ledger, task.source):
        plan.refusals.append(
            f"task {other.id} is {ledger.status(other, now_ms()).value} on {task.source}: one "
            "redrive at a time per DLQ"
        )
        plan.hints.append(
            f"let it finish, resume it (--resume {other.id} --execute) or cancel it "
            f"(streams dlq cancel ... {other.id})"
        )
    allowed = {s.name for s in pipeline.topic_specs()} | set(request.allow_topics)
    wanted = dict(plan.writes)
    if task.destination_topic is not None:
        wanted.setdefault(task.destination_topic, set())
    for topic, partitions in sorted(wanted.items()):
        if topic not in allowed:
            plan.refusals.append(f"{topic} is not a topic of pipeline {pipeline.name}")
            plan.hints.append(f"name it with --allow-topic {topic} if it is meant")
            continue
        count = reader.partitions(topic)
        if count is None:
            plan.refusals.append(f"destination topic {topic} does not exist")
            plan.hints.append("create it, or redrive elsewhere (--to)")
            continue
        missing = sorted(p for p in partitions if p is not None and p >= count)
        if missing:
            plan.refusals.append(
                f"records name partitions {missing} of {topic}, which has {count}: "
                "those partitions no longer exist"
            )
            plan.hints.append(f"redrive them by key instead: --to {topic}")


def plan_resume(pipeline: Pipeline, stage: str, task_id: str, *, kafka: KafkaSettings) -> Plan:
    """The rest of an interrupted (or failed) task, from its last committed transaction."""
    spec = require_stage(pipeline, stage)
    ledger = read_ledger(kafka)
    task = ledger.get(task_id)
    if task.stage != spec.group_id or task.kind != "redrive":
        raise BadArgumentError(
            f"task {task_id} is a {task.kind} of {task.stage}, not a redrive of {spec.group_id}"
        )
    status = ledger.status(task, now_ms())
    parts = []
    for p, (start, end) in sorted(task.ranges.items()):
        part = PartitionPlan(p, max(start, task.positions.get(p, start)), end)
        parts.append(part)
    plan = Plan(task=task, partitions=parts, resumed=True)
    plan.notes.append(
        f"{task.moved} of {task.to_move} moved so far; skipped {dict(task.skipped) or 'none'}"
    )
    if status in {Status.COMPLETED, Status.CANCELLED, Status.CANCELLING}:
        plan.refusals.append(f"task {task_id} is {status.value}: it cannot be resumed")
        plan.hints.append("start a new task for the records it did not move")
    elif status is Status.RUNNING:
        plan.notes.append(
            f"task {task_id} wrote progress {(now_ms() - task.updated_ms) / 1000:.0f} s ago: if "
            "its process still runs, resuming fences it (it stops; nothing is written twice)"
        )
    return plan


def execute(
    plan: Plan,
    *,
    kafka: KafkaSettings,
    settings: StageSettings | None = None,
    progress: Progress = NO_PROGRESS,
    stopper: Stopper | None = None,
) -> Task | None:
    """Run the plan (None when there is nothing to move); refused plans raise RefusedError."""
    if plan.refusals:
        raise RefusedError(plan.refusals[0], hint=plan.hints[-1] if plan.hints else None)
    require_ledger(kafka)
    task = plan.task
    ledger = read_ledger(kafka)
    if not plan.resumed:
        if task.to_move == 0:
            return None
        running = _active_on(ledger, task.source, exclude=task.id)
        if running:
            raise RefusedError(f"task {running[0].id} started on {task.source} meanwhile")
        stamp = now_ms()
        task = task.model_copy(update={"started_ms": stamp, "updated_ms": stamp})
    limits = DestinationLimits(kafka, [task.destination_topic] if task.destination_topic else [])
    history = RedriveHistory(
        ledger.tasks.values(), source=task.source, before=task, topic_id=task.source_topic_id
    )
    decider = RedriveDecider(RedriveRules.of(task), history, limits)
    return run_task(
        task,
        decider,
        kafka=kafka,
        settings=settings or StageSettings(),
        limits=limits,
        progress=progress,
        stopper=stopper,
    )
