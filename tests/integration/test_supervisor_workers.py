"""`streams run` publishes its slots to `_streams.stats`; the monitor's view and `streams lag
--pipeline` show a stage below its desired worker count (issue "Nothing stalls", item 2).

Before, a slot that ended with an exit code the supervisor does not restart (3, 4, 5) was
invisible: the stage's lag stayed OK while it ran on fewer workers than it was given.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from streams.config import KafkaSettings
from streams.lag import LagMonitor, StageView
from streams.observability.stats_reader import StatsReader
from streams.pipeline import Pipeline
from tests.integration.conftest import Cluster, PipelineTopics
from tests.integration.supervisor_pipelines import build

pytestmark = pytest.mark.integration

REFERENCE = "tests.integration.supervisor_pipelines:pipeline"
ROOT = Path(__file__).resolve().parents[2]
STREAMS = [sys.executable, "-m", "streams.cli.main"]


@pytest.fixture
def supervised(
    cluster: Cluster, pipeline_topics: PipelineTopics, tmp_path: Path
) -> tuple[Pipeline, dict[str, str], Path]:
    name = f"sup{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "STREAMS_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
        "TEST_PIPELINE": name,
        "TEST_INPUT": f"{name}.in",
        "TEST_OUTPUT": f"{name}.out",
    }
    pipeline = build(name, env["TEST_INPUT"], env["TEST_OUTPUT"])
    pipeline_topics(pipeline)
    return pipeline, env, tmp_path / "run.log"


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams.cli.main",
                "run",
                REFERENCE,
                "--stage",
                "copy",
                "--workers",
                "2",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )


def _stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=90)


def _view_once(pipeline: Pipeline, cluster: Cluster, reader: StatsReader) -> StageView:
    reader.catch_up()
    with LagMonitor(KafkaSettings(bootstrap_servers=cluster.bootstrap_servers)) as monitor:
        (stage,) = monitor.pipeline_view(pipeline, supervisors=reader.supervisors()).stages
    return stage


def _view_until(
    pipeline: Pipeline, cluster: Cluster, reader: StatsReader, running: int, log: Path
) -> StageView:
    """The stage's view once its supervisor reports ``running`` of 2 workers and its group
    exists (its running workers joined it), 60 s at most."""
    deadline = time.monotonic() + 60
    while True:
        stage = _view_once(pipeline, cluster, reader)
        joined = "does not exist" not in stage.rule
        if (stage.workers_desired, stage.workers_running) == (2, running) and joined:
            return stage
        if time.monotonic() > deadline:
            raise AssertionError(f"{stage}\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)


def test_a_slot_that_cannot_start_makes_the_stage_warn_naming_the_slot(
    cluster: Cluster, supervised: tuple[Pipeline, dict[str, str], Path]
) -> None:
    pipeline, env, log = supervised
    process = _start({**env, "TEST_BROKEN_SLOT": "1"}, log)
    reader = StatsReader(KafkaSettings(bootstrap_servers=cluster.bootstrap_servers))
    try:
        stage = _view_until(pipeline, cluster, reader, 1, log)
        assert stage.status.value == "WARN"
        assert stage.rule == "WARN: 1 of 2 workers down: slot 1 exited 5 (cannot start)"
        # the same through `streams lag --pipeline`, as a subprocess
        done = subprocess.run(
            [*STREAMS, "lag", "--pipeline", REFERENCE],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr  # WARN is not a failed check
        group = pipeline.get("copy").group_id
        assert (
            f"  {group}: input lag 0 (0.0 s), retry backlog 0, DLQ 0, workers 1/2: WARN "
            "WARN: 1 of 2 workers down: slot 1 exited 5 (cannot start)"
        ) in done.stdout.splitlines(), done.stdout
        # a clean stop is no alarm: the last record wants no worker
        assert _stop(process) == 5  # the supervisor exits with its slot's code
        stopped = _view_once(pipeline, cluster, reader)
        assert stopped.workers_desired is None
        assert "workers down" not in stopped.rule
    finally:
        if process.poll() is None:
            _stop(process)
        reader.close()


def test_both_slots_running_is_ok(
    cluster: Cluster, supervised: tuple[Pipeline, dict[str, str], Path]
) -> None:
    """The control: the same supervisor with no broken slot."""
    pipeline, env, log = supervised
    process = _start(env, log)
    reader = StatsReader(KafkaSettings(bootstrap_servers=cluster.bootstrap_servers))
    try:
        stage = _view_until(pipeline, cluster, reader, 2, log)
        assert stage.status.value == "OK", stage.rule
        assert "workers down" not in stage.rule
    finally:
        assert _stop(process) == 0
        reader.close()
