"""``streams dlq ls`` and ``streams dlq show``: what a DLQ holds, read-only.

``summarize_dlq`` counts the selected records per reason and error class, per partition, and
how many of them the ledger records as redriven; ``show_dlq`` returns the records themselves,
key and value decoded with the stage's codecs where they decode (as escaped bytes, ``\\xNN``,
where they do not), and every header.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message
from pydantic import BaseModel

from streams.codecs import registry_for
from streams.config import KafkaSettings
from streams.exceptions import SerializationError, TopologyError
from streams.pipeline import Pipeline, StageSpec
from streams.replay.ledger import read_ledger
from streams.replay.letters import Letter, escaped, read_letter
from streams.replay.plan import require_stage
from streams.replay.rules import RedriveHistory
from streams.replay.scan import NO_PROGRESS, Progress, Reader
from streams.replay.selection import Filters, restrict
from streams.replay.timespec import format_ms
from streams.serde import Serde

__all__ = ["DlqSummary", "ShownRecord", "show_dlq", "summarize_dlq"]


@dataclass
class PartitionSummary:
    partition: int
    log_start: int
    end: int
    count: int = 0
    first: int | None = None
    last: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "log_start": self.log_start,
            "last_stable": self.end,
            "selected": self.count,
            "first_offset": self.first,
            "last_offset": self.last,
        }


@dataclass
class DlqSummary:
    stage: str
    topic: str
    filters: Filters
    total: int = 0  # records in the range read
    selected: int = 0
    redriven: int = 0  # selected records a ledger task moved already
    by_cause: Counter[tuple[str, str]] = field(default_factory=Counter)  # (reason, class)
    formats: Counter[str] = field(default_factory=Counter)
    oldest: tuple[int, str] | None = None  # (timestamp, coordinates)
    newest: tuple[int, str] | None = None
    partitions: list[PartitionSummary] = field(default_factory=list)

    @property
    def pending(self) -> int:
        return self.selected - self.redriven

    def add(self, letter: Letter, part: PartitionSummary, *, redriven: bool) -> None:
        self.selected += 1
        self.redriven += int(redriven)
        self.by_cause[(letter.reason or "-", letter.error_class or "-")] += 1
        self.formats[letter.format] += 1
        stamp = (letter.timestamp_ms, letter.coordinates)
        if self.oldest is None or stamp < self.oldest:
            self.oldest = stamp
        if self.newest is None or stamp > self.newest:
            self.newest = stamp
        part.count += 1
        part.first = letter.offset if part.first is None else part.first
        part.last = letter.offset

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "topic": self.topic,
            "filters": self.filters.to_dict(),
            "records": self.total,
            "selected": self.selected,
            "redriven": self.redriven,
            "pending": self.pending,
            "by_cause": [
                {"reason": r, "error_class": c, "count": n}
                for (r, c), n in self.by_cause.most_common()
            ],
            "formats": dict(self.formats),
            "oldest": _stamp(self.oldest),
            "newest": _stamp(self.newest),
            "partitions": [p.to_dict() for p in self.partitions],
        }


def _stamp(found: tuple[int, str] | None) -> dict[str, Any] | None:
    if found is None:
        return None
    return {"timestamp_ms": found[0], "time": format_ms(found[0]), "record": found[1]}


def _dlq_of(pipeline: Pipeline, stage: str, dlq: str | None) -> tuple[StageSpec, str]:
    spec = require_stage(pipeline, stage)
    return spec, dlq or spec.dlq_topic


def _require(reader: Reader, topic: str, pipeline: Pipeline) -> int:
    count = reader.partitions(topic)
    if count is None:
        raise TopologyError(
            f"DLQ topic {topic} does not exist",
            hint=f"create the pipeline's topics: streams topics create MODULE:{pipeline.name}",
        )
    return count


def summarize_dlq(
    pipeline: Pipeline,
    stage: str,
    filters: Filters,
    *,
    kafka: KafkaSettings,
    dlq: str | None = None,
    offsets: dict[int, tuple[int, int | None]] | None = None,
    progress: Progress = NO_PROGRESS,
) -> DlqSummary:
    """Counts of what the DLQ holds (read to its last stable offset, now)."""
    spec, topic = _dlq_of(pipeline, stage, dlq)
    summary = DlqSummary(stage=spec.group_id, topic=topic, filters=filters)
    tasks = read_ledger(kafka).tasks.values()
    with Reader(kafka) as reader:
        history = RedriveHistory(tasks, source=topic, topic_id=reader.topic_id(topic))
        ranges = restrict(
            reader.watermarks(topic, _require(reader, topic, pipeline)), offsets or {}
        )
        parts = {p: PartitionSummary(p, s, e) for p, (s, e) in sorted(ranges.items())}
        summary.partitions = list(parts.values())

        def on_record(message: Message) -> None:
            summary.total += 1
            letter = read_letter(message)
            if filters.matches(letter):
                redriven = bool(history) and bool(history.movers(letter))
                summary.add(letter, parts[letter.partition], redriven=redriven)

        progress.start(f"reading {topic}", total=sum(e - s for s, e in ranges.values()))
        reader.read_range(topic, ranges, on_record, progress=progress)
        progress.finish()
    return summary


@dataclass
class ShownRecord:
    """One DLQ record for people: decoded where it decodes, every header shown."""

    letter: Letter
    key: Any
    value: Any
    key_note: str
    value_note: str
    redriven_by: list[str]

    def to_dict(self) -> dict[str, Any]:
        letter = self.letter
        return {
            "record": letter.coordinates,
            "partition": letter.partition,
            "offset": letter.offset,
            "timestamp_ms": letter.timestamp_ms,
            "time": format_ms(letter.timestamp_ms),
            "format": letter.format,
            "reason": letter.reason,
            "error_class": letter.error_class,
            "error_message": letter.error_message,
            "original": None if letter.original is None else "{}/{}@{}".format(*letter.original),
            "redrives": letter.redrives,
            "redriven_by": self.redriven_by,
            "key": self.key,
            "key_decoding": self.key_note,
            "value": self.value,
            "value_decoding": self.value_note,
            "headers": [[name, escaped(value)] for name, value in letter.headers],
        }


def _decode(serde: Serde[Any], data: bytes | None, topic: str, kind: str) -> tuple[Any, str]:
    """(shown value, how): the decoded value, or the escaped bytes and why."""
    if data is None:
        return None, "null"
    try:
        decoded = serde.deserialize(data, topic=topic)
    except SerializationError as error:
        return escaped(data), f"escaped bytes ({kind} does not decode: {error.message[:120]})"
    if isinstance(decoded, BaseModel):
        return decoded.model_dump(mode="json"), kind
    if isinstance(decoded, bytes):
        return escaped(decoded), "escaped bytes"
    return decoded, kind


def show_dlq(
    pipeline: Pipeline,
    stage: str,
    filters: Filters,
    *,
    kafka: KafkaSettings,
    limit: int = 20,
    dlq: str | None = None,
    offsets: dict[int, tuple[int, int | None]] | None = None,
) -> list[ShownRecord]:
    """The first ``limit`` selected records, decoded with the stage's key and input codecs."""
    spec, topic = _dlq_of(pipeline, stage, dlq)
    registry = registry_for([spec.key_codec, spec.input_codec], kafka.schema_registry_url)
    key_serde: Serde[Any] = spec.key_codec.build(registry)
    value_serde: Serde[Any] = spec.input_codec.build(registry)
    tasks = read_ledger(kafka).tasks.values()
    shown: list[ShownRecord] = []
    try:
        with Reader(kafka) as reader:
            history = RedriveHistory(tasks, source=topic, topic_id=reader.topic_id(topic))
            ranges = restrict(
                reader.watermarks(topic, _require(reader, topic, pipeline)), offsets or {}
            )

            def on_record(message: Message) -> None:
                letter = read_letter(message)
                if len(shown) >= limit or not filters.matches(letter):
                    return
                source = letter.original[0] if letter.original else topic
                key, key_note = _decode(key_serde, letter.key, source, spec.key_codec.kind)
                value, value_note = _decode(
                    value_serde, letter.value, source, spec.input_codec.describe()
                )
                movers = history.movers(letter) if history else []
                shown.append(ShownRecord(letter, key, value, key_note, value_note, movers))

            reader.read_range(
                topic, ranges, on_record, stop_partition=lambda _m: len(shown) >= limit
            )
    finally:
        if registry is not None:
            registry.close()
    return sorted(shown, key=lambda r: (r.letter.timestamp_ms, r.letter.partition))[:limit]
