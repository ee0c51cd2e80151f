"""A redrive's decision per record, and what the ledger says earlier tasks did (replay.rules)."""

from __future__ import annotations

from typing import Any

import pytest

from streams import headers as h
from streams.replay.letters import Letter, read_letter
from streams.replay.rules import RedriveHistory, RedriveRules, verdict
from streams.replay.selection import Filters
from streams.replay.task import Status, Task
from tests.unit.replay.fakes import DLQ, NOW, FakeMessage, ours, spring


def rules(**kw: Any) -> RedriveRules:
    settings: dict[str, Any] = {
        "task_id": "redrive-new",
        "filters": Filters(),
        "destination": "first-retry",
        "destination_topic": "orders.enrich.retry.2s",
        "keep_partition": False,
        "max_redrives": 3,
        "again": False,
        "skip_redriven": False,
        "timestamp": "original",
        **kw,
    }
    return RedriveRules(**settings)


def letter(offset: int = 7, partition: int = 1, **kw: Any) -> Letter:
    return read_letter(FakeMessage(offset=offset, partition=partition, found=ours(**kw)))


def task(task_id: str, *, started: int, ranges: dict[int, tuple[int, int]], **kw: Any) -> Task:
    return Task(
        id=task_id,
        kind="redrive",
        pipeline="orders",
        stage="orders.enrich",
        source=DLQ,
        destination="first-retry",
        destination_topic="orders.enrich.retry.2s",
        ranges=ranges,
        started_ms=started,
        updated_ms=started,
        **kw,
    )


def test_verdict_order_truncated_unroutable_max_redrives_already() -> None:
    assert verdict(letter(), rules(filters=Filters(keys=("other",))), 0) is None
    truncated = read_letter(FakeMessage(found=[*ours(), (h.TRUNCATED, b"10")]))
    assert verdict(truncated, rules(), 0) == "truncated"
    assert verdict(read_letter(FakeMessage(found=[("x", b"1")])), rules(), 0) == "unroutable"
    assert verdict(letter(count=3), rules(), 0) == "max-redrives"
    assert verdict(letter(count=2), rules(), 1) == "max-redrives"  # header count + ledger
    assert verdict(letter(), rules(), 1) == "already-redriven"
    assert verdict(letter(), rules(again=True), 1) == "move"
    assert verdict(letter(count=2), rules(), 0) == "move"


@pytest.mark.parametrize(
    ("destination", "topic", "keep", "expected"),
    [
        ("first-retry", "orders.enrich.retry.2s", False, ("orders.enrich.retry.2s", None)),
        ("first-retry", "orders.enrich.retry.2s", True, ("orders.enrich.retry.2s", 2)),
        ("input", None, True, ("orders.placed", 2)),
        ("topic", "orders.placed", False, ("orders.placed", 2)),  # its own topic: same partition
        ("topic", "elsewhere", False, ("elsewhere", None)),  # another: by key
    ],
)
def test_routes(destination: str, topic: str | None, keep: bool, expected: tuple[str, Any]) -> None:
    rule = rules(destination=destination, destination_topic=topic, keep_partition=keep)
    assert rule.route(letter()) == expected


def test_move_keeps_bytes_and_original_timestamp_and_counts() -> None:
    found = letter(count=1)
    move = rules().move(found, previous=1)
    assert (move.key, move.value) == (b"k", b"v")
    assert move.timestamp_ms == NOW - 60_000  # streams.original.timestamp
    assert h.get(move.headers, h.REPLAY_COUNT) == b"3"  # 1 in the header + 1 in the ledger + 1
    assert rules(timestamp="now").move(found, 0).timestamp_ms is None


def test_move_of_a_foreign_record_without_original_timestamp_uses_the_dlq_timestamp() -> None:
    found = read_letter(FakeMessage(found=spring()[:6], timestamp_ms=NOW - 5))
    assert found.original_timestamp_ms is None
    assert rules(destination="input").move(found, 0).timestamp_ms == NOW - 5


def test_history_counts_each_earlier_task_that_moved_the_record() -> None:
    first = task("redrive-1", started=1, ranges={1: (0, 10)}, status=Status.COMPLETED)
    again = task("redrive-2", started=2, ranges={1: (5, 10)}, status=Status.COMPLETED, again=True)
    other = task(
        "redrive-3",
        started=3,
        ranges={1: (0, 10)},
        status=Status.COMPLETED,
        filters=Filters(reasons=("validation",)).to_dict(),
    )
    history = RedriveHistory([again, other, first], source=DLQ)
    assert history.movers(letter(offset=7)) == ["redrive-1", "redrive-2"]
    assert history.movers(letter(offset=3)) == ["redrive-1"]
    assert history.movers(letter(offset=12)) == []
    assert history.movers(letter(offset=7, partition=0)) == []


def test_history_replays_an_earlier_tasks_rules_skip_and_max() -> None:
    first = task("redrive-1", started=1, ranges={1: (0, 10)}, status=Status.COMPLETED)
    # without --again the second task could not have moved what the first did
    second = task(
        "redrive-2", started=2, ranges={1: (0, 10)}, status=Status.COMPLETED, skip_redriven=True
    )
    capped = task(
        "redrive-3",
        started=3,
        ranges={1: (0, 10)},
        status=Status.COMPLETED,
        again=True,
        max_redrives=1,
    )
    assert RedriveHistory([first, second, capped], source=DLQ).movers(letter()) == ["redrive-1"]


def test_history_counts_only_what_an_interrupted_task_committed() -> None:
    half = task(
        "redrive-1", started=1, ranges={1: (0, 10)}, status=Status.INTERRUPTED, positions={1: 6}
    )
    history = RedriveHistory([half], source=DLQ)
    assert history.movers(letter(offset=5)) == ["redrive-1"]
    assert history.movers(letter(offset=6)) == []


def test_history_of_a_task_leaves_out_itself_and_later_tasks() -> None:
    first = task("redrive-1", started=1, ranges={1: (0, 10)}, status=Status.COMPLETED)
    me = task("redrive-2", started=2, ranges={1: (0, 10)}, again=True, positions={1: 9})
    later = task("redrive-3", started=3, ranges={1: (0, 10)}, status=Status.COMPLETED, again=True)
    history = RedriveHistory([first, me, later], source=DLQ, before=me)
    assert history.movers(letter()) == ["redrive-1"]
    assert not RedriveHistory([later], source="other.dlq")


def test_history_leaves_out_tasks_that_read_an_earlier_topic_of_the_same_name() -> None:
    def done(task_id: str, topic_id: str | None) -> Task:
        return task(
            task_id,
            started=1,
            ranges={1: (0, 10)},
            status=Status.COMPLETED,
            source_topic_id=topic_id,
        )

    assert RedriveHistory([done("r-1", "old")], source=DLQ, topic_id="new").movers(letter()) == []
    assert RedriveHistory([done("r-2", "new")], source=DLQ, topic_id="new").movers(letter()) == [
        "r-2"
    ]
    # a task written before topic ids were recorded is taken to have read this topic
    assert RedriveHistory([done("r-3", None)], source=DLQ, topic_id="new").movers(letter()) == [
        "r-3"
    ]
    # the control: without the current topic id every task of the name counts
    assert RedriveHistory([done("r-1", "old")], source=DLQ).movers(letter()) == ["r-1"]
