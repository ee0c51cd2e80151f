"""What a redrive does with each DLQ record. Pure: the same rules at plan time, while it runs,
after a resume, and when the ledger asks what an earlier task did with a record.

For one record, in this order:

1. it does not match the filters: not selected (not counted);
2. its value was cut to fit the DLQ (``streams.truncated``): skipped, ``truncated`` (the whole
   record is still in its input topic until retention: reset the stage to it instead);
3. it names no original coordinates: skipped, ``unroutable``;
4. it was redriven ``--max-redrives`` times already (its ``streams.replay.count`` plus the
   earlier tasks of the ledger that moved this very DLQ record): skipped, ``max-redrives``,
   so that a record that fails forever cannot loop;
5. an earlier task moved this DLQ record and neither ``--again`` nor ``--skip-redriven`` is
   given: ``already-redriven``, which makes the whole task refused; with ``--skip-redriven`` it
   is skipped; with ``--again`` it moves again, its count one higher;
6. otherwise it moves, to:

   ===============  ==========================================================================
   ``first-retry``  the stage's first retry tier, due now (no ``streams.due.ms``): it re-enters
                    the stage's own transactional path. A key-ordered stage gets it on its
                    original partition number, as its own retries do
   ``input``        the topic and partition of ``streams.original.*``
   ``TOPIC``        that topic: the original partition if it is the original topic, else the
                    producer's partitioner (by key)
   ===============  ==========================================================================

   with its key and value bytes unchanged, the headers of ``streams.replay.letters.
   redriven_headers``, and its original timestamp (``--timestamp now``: the time of the write).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from streams.headers import HeaderList
from streams.replay.letters import HeaderRewriter, Letter
from streams.replay.selection import Filters
from streams.replay.task import Task

__all__ = [
    "ALREADY_REDRIVEN",
    "SKIP_REASONS",
    "Move",
    "RedriveHistory",
    "RedriveRules",
    "verdict",
]

ALREADY_REDRIVEN = "already-redriven"
SKIP_REASONS = ("truncated", "unroutable", "max-redrives", ALREADY_REDRIVEN)
MOVE = "move"


class Move(NamedTuple):
    """One record to write: where, and every byte of it (a named tuple: one per record)."""

    topic: str
    partition: int | None  # None: the producer's partitioner (by key)
    key: bytes | None
    value: bytes | None
    headers: HeaderList  # a null value stays None
    timestamp_ms: int | None  # None: the time of the write


@dataclass(frozen=True)
class RedriveRules:
    """The settings of a redrive task that decide each record."""

    task_id: str
    filters: Filters
    destination: str  # first-retry | input | topic
    destination_topic: str | None
    keep_partition: bool
    max_redrives: int
    again: bool
    skip_redriven: bool
    timestamp: str  # original | now
    drop_headers: tuple[str, ...] = ()

    @classmethod
    def of(cls, task: Task) -> RedriveRules:
        return cls(
            task_id=task.id,
            filters=Filters.from_dict(task.filters),
            destination=task.destination,
            destination_topic=task.destination_topic,
            keep_partition=task.keep_partition,
            max_redrives=task.max_redrives,
            again=task.again,
            skip_redriven=task.skip_redriven,
            timestamp=task.timestamp,
            drop_headers=tuple(task.drop_headers),
        )

    @functools.cached_property
    def _rewrite(self) -> HeaderRewriter:
        return HeaderRewriter(self.task_id, self.drop_headers)

    def route(self, letter: Letter) -> tuple[str, int | None]:
        """(topic, partition) for a routable record (``letter.original`` is set)."""
        assert letter.original is not None  # noqa: S101 - verdict() checked it
        topic, partition, _offset = letter.original
        if self.destination == "input":
            return topic, partition
        assert self.destination_topic is not None  # noqa: S101 - set for the two others
        if self.destination == "first-retry":
            return self.destination_topic, partition if self.keep_partition else None
        return self.destination_topic, partition if topic == self.destination_topic else None

    def move(self, letter: Letter, previous: int) -> Move:
        """The record to write for ``letter`` (whose verdict is ``move``)."""
        topic, partition = self.route(letter)
        timestamp = None
        if self.timestamp == "original":
            timestamp = letter.original_timestamp_ms or letter.timestamp_ms
        return Move(
            topic=topic,
            partition=partition,
            key=letter.key,
            value=letter.value,
            headers=self._rewrite(letter, letter.redrives + previous + 1),
            timestamp_ms=timestamp,
        )


def verdict(letter: Letter, rules: RedriveRules, previous: int) -> str | None:
    """``move``, a skip reason, or None (not selected); ``previous``: earlier tasks' moves."""
    if not rules.filters.matches(letter):
        return None
    if letter.truncated:
        return "truncated"
    if letter.original is None:
        return "unroutable"
    if letter.redrives + previous >= rules.max_redrives:
        return "max-redrives"
    if previous and not rules.again:
        return ALREADY_REDRIVEN
    return MOVE


class RedriveHistory:
    """The redrives of one DLQ that came before a task: who moved which record already.

    Each earlier task's decisions are replayed on the record with that task's own rules, in
    the order the tasks started, over the part of its range it had committed: the count is
    exact without the ledger holding one entry per record.
    """

    def __init__(
        self,
        tasks: Iterable[Task],
        *,
        source: str,
        before: Task | None = None,
        topic_id: str | None = None,
    ) -> None:
        """``topic_id``: the source's id now; a task that read a topic of the same name with
        another id (deleted and created again since) covered none of its records. A task
        without an id (or none given here) is taken to have read this topic."""
        chosen = [
            t
            for t in tasks
            if t.kind == "redrive"
            and t.source == source
            and (topic_id is None or t.source_topic_id in {None, topic_id})
            and (before is None or (t.id != before.id and t.started_ms <= before.started_ms))
        ]
        chosen.sort(key=lambda t: (t.started_ms, t.id))
        self._tasks = [(t, RedriveRules.of(t)) for t in chosen]

    def __bool__(self) -> bool:
        return bool(self._tasks)

    def movers(self, letter: Letter) -> list[str]:
        """The ids of the earlier tasks that moved this DLQ record, oldest first."""
        found: list[str] = []
        for task, rules in self._tasks:
            if letter.partition not in task.ranges:
                continue
            start, _end = task.ranges[letter.partition]
            if not start <= letter.offset < task.covered_end(letter.partition):
                continue
            if verdict(letter, rules, len(found)) == MOVE:
                found.append(task.id)
        return found
