"""The lag view marks a group a replay task affects, on the real broker, from the real ledger.

A stage's group with committed offsets is reset to the earliest offsets (``plan_reset`` and
``execute_reset``, which record the reset in ``_streams.replay``). The monitor that sampled it
before sees a REWIND, kept, and explained by the reset; ``streams lag --json`` as a subprocess
gives its partitions the reset as ``replay`` and ``explained_by``. The control, a group on the
same topic that nobody reset, shows neither.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams.config import KafkaSettings
from streams.lag import GroupLag, LagMonitor, Status
from streams.replay import ReplayMarks, ResetRequest, execute_reset, plan_reset
from tests.integration.groups import commit_group_offsets
from tests.integration.replay_fixtures import replay_setup
from tests.integration.replay_pipelines import PARTITIONS, Setup, produce_inputs

pytestmark = pytest.mark.integration

__all__ = ["replay_setup"]

ROOT = Path(__file__).resolve().parents[2]
RECORDS = 40


def _ends(setup: Setup, topic: str) -> dict[tuple[str, int], int]:
    reader = Consumer({**setup.config, "group.id": "lag-replay-marks-reader"})
    try:
        return {
            (topic, p): reader.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in range(PARTITIONS)
        }
    finally:
        reader.close()


def _lag(setup: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    """``streams lag ARGS`` as a subprocess: a fresh process reads the ledger from its start."""
    return subprocess.run(
        [sys.executable, "-m", "streams.cli.main", "lag", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={**os.environ, "STREAMS_BOOTSTRAP_SERVERS": setup.config["bootstrap.servers"]},
    )


def _sample(monitor: LagMonitor, groups: list[str]) -> dict[str, GroupLag]:
    return {g.group: g for g in monitor.sample(groups)}


def test_a_reset_group_is_marked_rewind_explained_by_the_reset_and_a_control_is_not(
    replay_setup: Setup,
) -> None:
    setup = replay_setup
    kafka = KafkaSettings(bootstrap_servers=setup.config["bootstrap.servers"])
    topic = f"{setup.name}.in"
    group = f"{setup.name}.work"
    control = f"{setup.name}.control"
    produce_inputs(setup.config, topic, RECORDS)
    ends = _ends(setup, topic)
    assert sum(ends.values()) == RECORDS
    commit_group_offsets(setup.config["bootstrap.servers"], group, ends)
    commit_group_offsets(setup.config["bootstrap.servers"], control, ends)

    with LagMonitor(kafka, window_s=300, min_samples=2, replay=ReplayMarks(kafka)) as monitor:
        before = _sample(monitor, [group, control])
        assert before[group].replay == ()
        assert before[group].sum_lag == 0

        plan = plan_reset(setup.pipeline, "work", ResetRequest(mode="earliest"), kafka=kafka)
        assert not plan.refusals, plan.refusals
        task = execute_reset(plan, setup.pipeline, "work", kafka=kafka)

        # the ledger is followed in the background: the reset shows within a sample or two
        deadline = time.monotonic() + 20
        while True:
            after = _sample(monitor, [group, control])
            if after[group].replay or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    marked = after[group]
    assert [(m.kind, m.task) for m in marked.replay] == [("reset", task.id)]
    assert marked.status is Status.REWIND  # the status is kept ...
    assert "committed offset went back" in marked.rule
    assert marked.explained_by is not None  # ... and explained
    assert marked.explained_by.startswith(f"reset task {task.id}, ")
    assert marked.explained_by.endswith(", 10 min window")
    assert all(p.explained_by == marked.explained_by for p in marked.partitions if p.lag)
    assert (after[control].replay, after[control].explained_by) == ((), None)
    assert after[control].status is Status.OK

    done = _lag(setup, "--group", group, "--group", control)
    assert done.returncode == 0, done.stderr
    assert f"  explained by reset task {task.id}" in done.stdout
    listed = _lag(setup, "--json", "--group", group, "--group", control)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    mine = [r for r in rows if r["group"] == group]
    others = [r for r in rows if r["group"] == control]
    assert len(mine) == len(others) == PARTITIONS
    for row in mine:
        assert [(m["kind"], m["task"]) for m in row["replay"]] == [("reset", task.id)]
        # one snapshot has no history: no REWIND yet, but the lag the reset made is explained
        assert (row["status"], row["lag"]) == ("OK", ends[topic, row["partition"]])
        if row["lag"]:
            assert row["explained_by"].startswith(f"reset task {task.id}, ")
    for row in others:
        assert (row["replay"], row["explained_by"], row["lag"]) == ([], None, 0)
