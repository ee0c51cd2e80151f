"""Task statuses, ids and the ledger's JSON form (replay.task)."""

from __future__ import annotations

import re
from typing import Any

from streams.replay.task import HEARTBEAT_STALE_MS, Status, Task, new_task_id, status_of


def make(**kw: Any) -> Task:
    return Task(
        id="redrive-1",
        kind="redrive",
        pipeline="p",
        stage="p.s",
        source="p.s.dlq",
        destination="input",
        started_ms=1000,
        updated_ms=1000,
        **kw,
    )


def test_json_round_trip_keeps_integer_partitions_and_ranges() -> None:
    task = make(ranges={0: (1, 5), 3: (0, 9)}, positions={3: 4}, skipped={"unroutable": 2})
    back = Task.from_json(task.to_json())
    assert back == task
    assert back.ranges[3] == (0, 9)
    assert back.positions == {3: 4}


def test_a_silent_running_task_shows_as_interrupted() -> None:
    task = make()
    assert (
        status_of(task, cancel_requested=False, now_ms=1000 + HEARTBEAT_STALE_MS) is Status.RUNNING
    )
    late = 1001 + HEARTBEAT_STALE_MS
    assert status_of(task, cancel_requested=False, now_ms=late) is Status.INTERRUPTED


def test_a_cancel_request_shows_as_cancelling_then_cancelled_when_nobody_runs_it() -> None:
    assert status_of(make(), cancel_requested=True, now_ms=1000) is Status.CANCELLING
    stopped = make(status=Status.INTERRUPTED)
    assert status_of(stopped, cancel_requested=True, now_ms=1000) is Status.CANCELLED
    done = make(status=Status.COMPLETED)
    assert status_of(done, cancel_requested=True, now_ms=10**12) is Status.COMPLETED


def test_covered_end_is_the_whole_range_once_completed() -> None:
    assert make(ranges={0: (2, 9)}, positions={0: 5}).covered_end(0) == 5
    assert make(ranges={0: (2, 9)}).covered_end(0) == 2
    assert make(ranges={0: (2, 9)}, status=Status.COMPLETED).covered_end(0) == 9


def test_task_ids_name_the_kind_and_the_utc_time() -> None:
    found = new_task_id("redrive", 1_764_633_600_000)
    assert re.fullmatch(r"redrive-20251202-000000-[0-9a-f]{4}", found)
