"""``streams replay reset``: move a stage's (or a sink's) offsets, as ``kafka-consumer-groups``.

Modes: ``--to-earliest`` (log start), ``--to-latest`` (last stable offset), ``--to-datetime T``
and ``--by-duration D`` (the first offset whose timestamp is at or after the time; the end when
there is none, said so), ``--to-offset N``, ``--shift-by N`` (from the committed offset; a
partition without one fails) and ``--from-file F`` (CSV ``topic,partition,offset``, or with the
group first: what ``--export`` prints). Every target is clamped to [log start, last stable
offset], and the clamp is said.

Scope: the component's inputs, or ``--topic T[:P,...]``. A stage's retry topics follow
``--retry-topics``: ``keep`` (default: untouched, nothing waiting in them is lost), ``end``
(skipped to their end: what waits there is dropped) or ``reset`` (the same mode as the inputs).

Safety rules (exit 3): the group has live members (they are named: stop the stage first); a
key-ordered stage reset backwards with ``--retry-topics keep`` (the records of its keys waiting
in retry would then be processed twice, out of order).

A sink keeps its offsets in its database (``streams_sink_offsets``); a reset of a sink rewrites
them there, every partition in one database transaction, then commits the same offsets to
Kafka (advisory: lag tools read those). A reset is recorded in the ledger.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaException
from confluent_kafka import TopicPartition as KafkaPartition
from confluent_kafka.admin import AdminClient

from streams.config import KafkaSettings, SinkSettings
from streams.exceptions import BadArgumentError, KafkaClientError, RefusedError
from streams.pipeline import Pipeline, SinkSpec
from streams.replay.ledger import require_ledger, write_task
from streams.replay.mover import now_ms
from streams.replay.scan import Reader
from streams.replay.task import Status, Task, new_task_id
from streams.sinks import Database, overwrite_offset, read_offsets
from streams.spec import Component

__all__ = ["ResetPlan", "ResetRequest", "ResetRow", "execute_reset", "parse_scope", "plan_reset"]

Mode = Literal["earliest", "latest", "datetime", "offset", "shift", "file"]
RetryMode = Literal["keep", "end", "reset"]
_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ResetRequest:
    mode: Mode
    value: int | None = None  # datetime: ms; offset: N; shift: N
    topics: dict[str, tuple[int, ...] | None] = field(default_factory=dict)
    retry_topics: RetryMode = "keep"
    rows: tuple[tuple[str, int, int], ...] = ()  # --from-file


@dataclass
class ResetRow:
    """One partition of the plan: where the group is, and where it will be."""

    topic: str
    partition: int
    current: int | None  # committed (a sink: stored in its database); None: no commit
    log_start: int
    end: int  # last stable offset
    new: int
    role: str  # input | retry
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "current": self.current,
            "new": self.new,
            "log_start": self.log_start,
            "last_stable": self.end,
            "role": self.role,
            "note": self.note,
        }


@dataclass
class ResetPlan:
    group: str
    kind: str  # stage | sink
    rows: list[ResetRow]
    state: str = ""
    members: list[str] = field(default_factory=list)
    database: str | None = None  # a sink's database (password hidden)
    refusals: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)

    @property
    def backwards(self) -> bool:
        return any(
            r.role == "input" and r.current is not None and r.new < r.current for r in self.rows
        )

    def csv(self) -> str:
        """The plan as ``kafka-consumer-groups --export`` prints it: topic,partition,offset."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        for row in self.rows:
            writer.writerow([row.topic, row.partition, row.new])
        return out.getvalue()

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "kind": self.kind,
            "state": self.state,
            "members": self.members,
            "database": self.database,
            "backwards": self.backwards,
            "rows": [r.to_dict() for r in self.rows],
            "refused": bool(self.refusals),
            "refusals": self.refusals,
            "hints": self.hints,
        }


def parse_scope(values: Sequence[str]) -> dict[str, tuple[int, ...] | None]:
    """``--topic T`` and ``--topic T:0,1,2`` as topic -> partitions (None: all of them)."""
    scope: dict[str, tuple[int, ...] | None] = {}
    for value in values:
        topic, _, partitions = value.partition(":")
        if not partitions:
            scope[topic] = None
            continue
        try:
            scope[topic] = tuple(int(p) for p in partitions.split(","))
        except ValueError:
            raise BadArgumentError(f"--topic {value!r} is not T or T:0,1,2") from None
    return scope


def read_plan_file(path: Path, group: str) -> tuple[tuple[str, int, int], ...]:
    """``--from-file``: rows ``topic,partition,offset`` or ``group,topic,partition,offset``."""
    rows = []
    for number, line in enumerate(csv.reader(path.read_text().splitlines()), start=1):
        if not line or line[0].startswith("#"):
            continue
        fields = line
        if len(fields) == 4:  # noqa: PLR2004 - the group-first form
            if fields[0] != group:
                continue
            fields = fields[1:]
        try:
            topic, partition, offset = fields[0], int(fields[1]), int(fields[2])
        except (IndexError, ValueError):
            raise BadArgumentError(f"{path}:{number}: not topic,partition,offset: {line}") from None
        rows.append((topic, partition, offset))
    if not rows:
        raise BadArgumentError(f"{path} holds no row for group {group}")
    return tuple(rows)


def _scope(component: Component, request: ResetRequest) -> list[tuple[str, str]]:
    """(topic, role) of every topic the reset touches."""
    inputs = list(component.inputs)
    retries = list(component.retry_topics)
    if request.topics:
        unknown = sorted(set(request.topics) - set(inputs) - set(retries))
        if unknown:
            raise BadArgumentError(
                f"--topic {', '.join(unknown)}: not read by {component.group_id} "
                f"(inputs: {', '.join(inputs)})"
            )
        inputs = [t for t in inputs if t in request.topics]
        retries = [t for t in retries if t in request.topics]
    touched = [(t, "input") for t in inputs]
    if request.retry_topics != "keep" or request.topics:
        touched += [
            (t, "retry") for t in retries if request.retry_topics != "keep" or t in request.topics
        ]
    return touched


def _listed(component: Component, request: ResetRequest) -> list[tuple[str, str]]:
    """(topic, role) of the topics a --from-file plan names."""
    roles = {t: "retry" if t in component.retry_topics else "input" for t, _p, _o in request.rows}
    unknown = sorted(set(roles) - set(component.subscriptions))
    if unknown:
        raise BadArgumentError(
            f"--from-file names topics {component.group_id} does not read: {', '.join(unknown)}"
        )
    return sorted(roles.items())


def _target(row: ResetRow, request: ResetRequest, by_time: dict[int, int] | None) -> int:
    """Where ``row`` goes under ``request``, before clamping (``by_time``: offsets_for_times)."""
    if row.role == "retry" and request.retry_topics == "end":
        row.note = "retry topic: to its end"
        return row.end
    mode = request.mode
    if mode == "earliest":
        return row.log_start
    if mode == "latest":
        return row.end
    if mode == "shift":
        if row.current is None:
            raise BadArgumentError(
                f"--shift-by: {row.topic}/{row.partition} has no committed offset to shift",
                hint="use --to-earliest, --to-offset or --to-datetime for it (--topic T:P)",
            )
        assert request.value is not None  # noqa: S101 - parsed with the mode
        return row.current + request.value
    if mode == "datetime":
        assert by_time is not None  # noqa: S101 - read for the datetime mode
        if by_time[row.partition] >= row.end:
            row.note = "no record at or after the time: the end"
        return by_time[row.partition]
    assert request.value is not None  # noqa: S101 - offset
    return request.value


def _current(
    component: Component, kafka: KafkaSettings, reader: Reader
) -> dict[tuple[str, int], int]:
    """The committed offsets: a sink's from its database, a stage's from the group."""
    if isinstance(component, SinkSpec):
        url = SinkSettings().database_url or component.database
        with Database(url).connect() as db:
            try:
                return read_offsets(db, component.group_id)
            except Exception:  # noqa: BLE001 - no offsets table yet: the sink never ran
                return {}
    wanted = [
        KafkaPartition(t, p)
        for t in component.subscriptions
        for p in range(reader.partitions(t) or 0)
    ]
    admin = AdminClient(kafka.client_config())
    futures = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(component.group_id, wanted)], request_timeout=_TIMEOUT_S
    )
    try:
        found = futures[component.group_id].result(timeout=_TIMEOUT_S)
    except KafkaException as error:
        raise KafkaClientError(
            f"cannot read the offsets of {component.group_id}: {error}"
        ) from error
    return {(tp.topic, tp.partition): tp.offset for tp in found.topic_partitions if tp.offset >= 0}


def _membership(group: str, kafka: KafkaSettings) -> tuple[str, list[str]]:
    """The group's state and its members (``client.id@host``)."""
    admin = AdminClient(kafka.client_config())
    try:
        found = admin.describe_consumer_groups([group], request_timeout=_TIMEOUT_S)[group].result(
            timeout=_TIMEOUT_S
        )
    except KafkaException as error:
        raise KafkaClientError(f"cannot describe group {group}: {error}") from error
    members = [f"{m.client_id}@{m.host.lstrip('/')} ({m.member_id})" for m in found.members]
    return found.state.name, members


# Over 50 lines: the plan reads each touched partition's four offsets and applies the mode, the
# clamp and the notes that say what happened; split, it would pass the same six values around.
def plan_reset(
    pipeline: Pipeline, stage: str, request: ResetRequest, *, kafka: KafkaSettings
) -> ResetPlan:
    """The reset ``request`` asks for, per partition; nothing is changed."""
    component = pipeline.component(stage)
    plan = ResetPlan(group=component.group_id, kind=component.kind, rows=[])
    if isinstance(component, SinkSpec):
        plan.database = Database(SinkSettings().database_url or component.database).redacted
    plan.state, plan.members = _membership(component.group_id, kafka)
    with Reader(kafka, purpose="reset") as reader:
        current = _current(component, kafka, reader)
        listed = {(t, p): o for t, p, o in request.rows}
        touched = (
            _scope(component, request) if request.mode != "file" else _listed(component, request)
        )
        for topic, role in touched:
            count = reader.require(topic, what="topic", hint="streams topics create MODULE:P")
            marks = reader.watermarks(topic, count)
            by_time = None
            if request.mode == "datetime" and request.value is not None:
                by_time = reader.offsets_for_time(topic, marks, request.value)
            wanted = request.topics.get(topic)
            for p, (low, end) in sorted(marks.items()):
                if (wanted is not None and p not in wanted) or (
                    request.mode == "file" and (topic, p) not in listed
                ):
                    continue
                row = ResetRow(topic, p, current.get((topic, p)), low, end, low, role)
                target = (
                    listed[(topic, p)] if request.mode == "file" else _target(row, request, by_time)
                )
                row.new = min(max(target, low), end)
                if row.new != target:
                    row.note = f"{target} clamped to [{low}, {end}]"
                plan.rows.append(row)
    _refuse(plan, component, request)
    return plan


def _refuse(plan: ResetPlan, component: Component, request: ResetRequest) -> None:
    if plan.state not in {ConsumerGroupState.EMPTY.name, ConsumerGroupState.DEAD.name}:
        plan.refusals.append(
            f"group {plan.group} is {plan.state} with {len(plan.members)} live members: "
            + "; ".join(plan.members[:5])
        )
        plan.hints.append(
            f"stop the {component.kind}'s workers first (its offsets can only be "
            "reset while nobody reads them)"
        )
    key_ordered = not isinstance(component, SinkSpec) and component.retry.key_ordered
    if key_ordered and plan.backwards and request.retry_topics == "keep":
        plan.refusals.append(
            f"{plan.group} has key-ordered retries: a backwards reset that keeps its retry "
            "topics would process the records waiting there twice, out of key order"
        )
        plan.hints.append("pass --retry-topics end (drop what waits) or --retry-topics reset")


def execute_reset(plan: ResetPlan, pipeline: Pipeline, stage: str, *, kafka: KafkaSettings) -> Task:
    """Apply the plan (refused plans raise RefusedError); the reset is recorded in the ledger."""
    if plan.refusals:
        raise RefusedError(plan.refusals[0], hint=plan.hints[-1] if plan.hints else None)
    require_ledger(kafka)
    state, members = _membership(plan.group, kafka)  # again: a worker may have started since
    if members:
        raise RefusedError(f"group {plan.group} is {state} with live members: {members[0]}")
    component = pipeline.component(stage)
    offsets = {(r.topic, r.partition): r.new for r in plan.rows}
    if isinstance(component, SinkSpec):
        _write_sink(component, offsets)
    _commit_kafka(plan.group, offsets, kafka)
    stamp = now_ms()
    task = Task(
        id=new_task_id("reset", stamp),
        kind="reset",
        pipeline=pipeline.name,
        stage=plan.group,
        source="",
        destination="",
        affects=[plan.group],
        status=Status.COMPLETED,
        started_ms=stamp,
        updated_ms=stamp,
        finished_ms=stamp,
        offsets=[_applied(r) for r in plan.rows],
    )
    write_task(kafka, task)
    return task


def _applied(row: ResetRow) -> dict[str, Any]:
    return {"topic": row.topic, "partition": row.partition, "before": row.current, "after": row.new}


def _write_sink(component: SinkSpec, offsets: dict[tuple[str, int], int]) -> None:
    """Every partition's stored offset in one database transaction."""
    url = SinkSettings().database_url or component.database
    with Database(url).connect() as db:
        db.begin()
        try:
            for tp, offset in sorted(offsets.items()):
                overwrite_offset(db, component.group_id, tp, offset)
            db.commit()
        except BaseException:
            db.rollback()
            raise


def _commit_kafka(group: str, offsets: dict[tuple[str, int], int], kafka: KafkaSettings) -> None:
    admin = AdminClient(kafka.client_config())
    request = ConsumerGroupTopicPartitions(
        group, [KafkaPartition(t, p, o) for (t, p), o in sorted(offsets.items())]
    )
    futures = admin.alter_consumer_group_offsets([request], request_timeout=_TIMEOUT_S)
    try:
        result = futures[group].result(timeout=_TIMEOUT_S)
    except KafkaException as error:
        raise KafkaClientError(
            f"the broker refused the new offsets of {group}: {error}",
            hint="a worker of the group may have started meanwhile; stop it and run again",
        ) from error
    failed = [tp for tp in result.topic_partitions if tp.error is not None]
    if failed:
        raise KafkaClientError(f"offsets of {group} not set for {failed}")
