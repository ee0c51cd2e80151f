"""``streams replay copy``: a time range of one topic into another, exactly once, resumable.

Each partition starts at the first record at or after ``--since`` (``offsets_for_times``) and
stops at the first record at or after ``--until``, or at its last stable offset when the task
began: kcat's ``-o s@`` / ``-o e@``, so with out-of-order timestamps a later record below
``--until`` is not copied. Each record keeps its key, value, headers (then the task's
provenance: ``streams.replayed``, ``streams.replay.source``), timestamp and partition number;
unequal partition counts are refused unless ``--by-key`` (the producer's partitioner, by key).
The task runs like a redrive (``streams.replay.runner``): its own consumer group, one
transaction for what it writes, its source offsets and its ledger record.

Safety rules (exit 3): the destination is not a topic of the pipeline (unless ``--allow-topic``)
or does not exist; unequal partition counts without ``--by-key``; the range overlaps what an
earlier copy from the same source to the same destination copied (unless ``--again``);
another copy between the two topics is running or interrupted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import Message

from streams.config import KafkaSettings, StageSettings
from streams.exceptions import BadArgumentError, RefusedError, TopologyError
from streams.kafka.messages import message_headers
from streams.pipeline import Pipeline
from streams.replay.destinations import DestinationLimits
from streams.replay.ledger import LedgerState, read_ledger, require_ledger
from streams.replay.letters import copied_headers
from streams.replay.mover import now_ms
from streams.replay.plan import PartitionPlan, Plan
from streams.replay.rules import Move
from streams.replay.runner import Stopper, run_task
from streams.replay.scan import NO_PROGRESS, Progress, Reader
from streams.replay.task import ACTIVE, Status, Task, new_task_id

__all__ = ["CopyDecider", "CopyRequest", "execute_copy", "plan_copy", "plan_copy_resume"]

ALREADY_COPIED = "already-copied"


@dataclass(frozen=True)
class CopyRequest:
    source: str
    destination: str
    since_ms: int | None = None
    until_ms: int | None = None
    by_key: bool = False
    again: bool = False
    allow_topics: tuple[str, ...] = field(default_factory=tuple)
    rate: float | None = None


class CopyDecider:
    """Every record of the range moves: same key, value, headers (+ provenance), timestamp.

    Unless the destination would refuse it or delete it at once (``too-large``, ``too-old``):
    a plan with such records is refused.
    """

    def __init__(self, task: Task, limits: DestinationLimits) -> None:
        assert task.destination_topic is not None  # noqa: S101 - a copy names its destination
        self._topic = task.destination_topic
        self._task_id = task.id
        self._same_partition = task.keep_partition
        self._limits = limits

    def __call__(self, message: Message) -> Move | str:
        p = message.partition() or 0
        source = f"{message.topic()}/{p}@{message.offset()}"
        move = Move(
            topic=self._topic,
            partition=p if self._same_partition else None,
            key=message.key(),
            value=message.value(),
            headers=copied_headers(message_headers(message), task_id=self._task_id, source=source),
            timestamp_ms=message.timestamp()[1],
        )
        return self._limits.check(move, now_ms()) or move


def _earlier(ledger: LedgerState, task: Task) -> list[Task]:
    return [
        t
        for t in ledger.recent()
        if t.kind == "copy"
        and t.source == task.source
        and t.destination_topic == task.destination_topic
        and t.id != task.id
    ]


def _draft(pipeline: Pipeline, stage: str | None, request: CopyRequest) -> Task:
    stamp = now_ms()
    task_id = new_task_id("copy", stamp)
    readers = [c.group_id for c in pipeline.stages if request.destination in c.inputs]
    return Task(
        id=task_id,
        kind="copy",
        pipeline=pipeline.name,
        stage=pipeline.get(stage).group_id if stage else pipeline.name,
        source=request.source,
        destination="topic",
        destination_topic=request.destination,
        keep_partition=not request.by_key,
        group=f"_streams.copy.{task_id}",
        transactional_id=f"_streams.copy.{request.source}.{request.destination}",
        affects=readers,
        filters={"since_ms": request.since_ms, "until_ms": request.until_ms},
        again=request.again,
        rate=request.rate,
        started_ms=stamp,
        updated_ms=stamp,
    )


# Over 50 lines: the copy's checks (topics, partition counts, allow-list, the ledger) and its
# scan, each with the message that names what is wrong.
def plan_copy(
    pipeline: Pipeline,
    request: CopyRequest,
    *,
    kafka: KafkaSettings,
    stage: str | None = None,
    progress: Progress = NO_PROGRESS,
) -> Plan:
    """What the copy would do, read from the broker; nothing is written."""
    if request.source == request.destination:
        raise BadArgumentError("--from and --to name the same topic")
    task = _draft(pipeline, stage, request)
    with Reader(kafka) as reader:
        count = reader.partitions(request.source)
        if count is None:
            raise TopologyError(f"topic {request.source} does not exist")
        watermarks = reader.watermarks(request.source, count)
        starts = {p: low for p, (low, _end) in watermarks.items()}
        if request.since_ms is not None:
            starts = reader.offsets_for_time(request.source, watermarks, request.since_ms)
        ranges = {p: (max(starts[p], low), end) for p, (low, end) in watermarks.items()}
        task = task.model_copy(update={"ranges": ranges})
        plan = Plan(task=task, partitions=[PartitionPlan(p, s, e) for p, (s, e) in ranges.items()])
        _check_destination(plan, pipeline, request, reader, count)
        ledger = read_ledger(kafka)
        # a destination that is missing or not allowed: counted only, it is refused anyway
        decide = None if plan.refused else CopyDecider(task, DestinationLimits(kafka))
        ends = _scan(reader, plan, _earlier(ledger, task), request, progress, decide)
    task = plan.task.model_copy(
        update={
            "ranges": {p: (ranges[p][0], ends[p]) for p in ranges},
            "to_move": plan.to_move,
            "skip_planned": dict(plan.skipped),
        }
    )
    plan.task = task
    for part in plan.partitions:
        part.end = ends[part.partition]
    stamp = now_ms()
    for other in _earlier(ledger, task):
        status = ledger.status(other, stamp)
        if status in ACTIVE:
            plan.refusals.append(
                f"copy {other.id} from {task.source} to {task.destination_topic} is {status.value}"
            )
            plan.hints.append(f"resume it (--resume {other.id}) or cancel it")
    return plan


def _check_destination(
    plan: Plan, pipeline: Pipeline, request: CopyRequest, reader: Reader, count: int
) -> None:
    allowed = {s.name for s in pipeline.topic_specs()} | set(request.allow_topics)
    if request.destination not in allowed:
        plan.refusals.append(f"{request.destination} is not a topic of pipeline {pipeline.name}")
        plan.hints.append(f"name it with --allow-topic {request.destination} if it is meant")
    found = reader.partitions(request.destination)
    if found is None:
        plan.refusals.append(f"destination topic {request.destination} does not exist")
        plan.hints.append("create it first (a copy never creates topics)")
    elif found != count and not request.by_key:
        plan.refusals.append(
            f"{request.source} has {count} partitions and {request.destination} {found}: a "
            "record cannot keep its partition"
        )
        plan.hints.append("pass --by-key to place records by key (the producer's partitioner)")


def _scan(  # noqa: PLR0917 - private, called once
    reader: Reader,
    plan: Plan,
    earlier: list[Task],
    request: CopyRequest,
    progress: Progress,
    decide: CopyDecider | None,
) -> dict[int, int]:
    """Count the range, stop each partition at --until; returns the end offsets."""
    parts = {p.partition: p for p in plan.partitions}
    overlap: Counter[str] = Counter()

    def on_record(message: Message) -> None:
        p, offset = message.partition() or 0, message.offset() or 0
        found = "move" if decide is None else decide(message)
        parts[p].note(offset, found if isinstance(found, str) else "move")
        for other in earlier:
            start, _end = other.ranges.get(p, (0, 0))
            if start <= offset < other.covered_end(p):
                overlap[other.id] += 1
                break

    def past_until(message: Message) -> bool:
        return request.until_ms is not None and message.timestamp()[1] >= request.until_ms

    ranges = plan.task.ranges
    progress.start(f"reading {request.source}", total=sum(e - s for s, e in ranges.values()))
    ends = reader.read_range(
        request.source, ranges, on_record, progress=progress, stop_partition=past_until
    )
    progress.finish()
    for reason, why in (
        ("too-old", "timestamps older than its retention.ms allows (deleted or refused at once)"),
        ("too-large", "records over its max.message.bytes"),
    ):
        if plan.skipped[reason]:
            plan.refusals.append(
                f"{plan.skipped[reason]} records of the range would have "
                f"{why} in {request.destination}"
            )
            plan.hints.append("raise the destination's limit, or copy a narrower or newer range")
    if overlap and not request.again:
        tasks = ", ".join(f"{t} ({n})" for t, n in overlap.most_common(5))
        plan.refusals.append(
            f"{sum(overlap.values())} records of the range were copied before, by {tasks}"
        )
        plan.hints.append("pass --again to copy them once more, or narrow --since/--until")
    return ends


def plan_copy_resume(pipeline: Pipeline, task_id: str, *, kafka: KafkaSettings) -> Plan:
    """The rest of an interrupted or failed copy."""
    ledger = read_ledger(kafka)
    task = ledger.get(task_id)
    if task.kind != "copy" or task.pipeline != pipeline.name:
        raise BadArgumentError(f"task {task_id} is not a copy of pipeline {pipeline.name}")
    status = ledger.status(task, now_ms())
    parts = [
        PartitionPlan(p, max(start, task.positions.get(p, start)), end)
        for p, (start, end) in sorted(task.ranges.items())
    ]
    plan = Plan(task=task, partitions=parts, resumed=True)
    plan.notes.append(f"{task.moved} of {task.to_move} copied so far")
    if status in {Status.COMPLETED, Status.CANCELLED, Status.CANCELLING}:
        plan.refusals.append(f"task {task_id} is {status.value}: it cannot be resumed")
        plan.hints.append("start a new task for the records it did not move")
    elif status is Status.RUNNING:
        plan.notes.append(
            f"task {task_id} wrote progress {(now_ms() - task.updated_ms) / 1000:.0f} s ago: if "
            "its process still runs, resuming fences it (it stops; nothing is written twice)"
        )
    return plan


def execute_copy(
    plan: Plan,
    *,
    kafka: KafkaSettings,
    settings: StageSettings | None = None,
    progress: Progress = NO_PROGRESS,
    stopper: Stopper | None = None,
) -> Task | None:
    """Run the copy (None when the range is empty); refused plans raise RefusedError."""
    if plan.refusals:
        raise RefusedError(plan.refusals[0], hint=plan.hints[-1] if plan.hints else None)
    require_ledger(kafka)
    task = plan.task
    if not plan.resumed:
        if task.to_move == 0:
            return None
        stamp = now_ms()
        task = task.model_copy(update={"started_ms": stamp, "updated_ms": stamp})
    limits = DestinationLimits(kafka, [task.destination_topic or ""])
    return run_task(
        task,
        CopyDecider(task, limits),
        kafka=kafka,
        settings=settings or StageSettings(),
        limits=limits,
        progress=progress,
        stopper=stopper,
    )
