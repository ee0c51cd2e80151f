"""`streams run` as an operator starts it: a supervisor subprocess with worker children.

The copy stage runs with two workers over numbered records; the output, read with a fresh
read_committed consumer, must hold every input exactly once after a SIGTERM of the
supervisor, and after one worker is SIGKILLed and restarted by the supervisor.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from confluent_kafka import Consumer, TopicPartition

from streams.cli.main import cli
from tests.integration.conftest import Cluster, PipelineTopics, TopicFactory
from tests.integration.eos import check_exactly_once, produce_numbered, read_committed
from tests.integration.pipelines import build_copy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
STREAMS = str(Path(sys.executable).with_name("streams"))
PARTITIONS = 4
COUNT = 6_000
WORKERS = 2


@dataclass
class Run:
    """One `streams run` subprocess and what it needs: its group, topics and log file."""

    process: subprocess.Popen[bytes]
    group: str
    source: str
    sink: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def start_run(
    cluster: Cluster, topic_factory: TopicFactory, tmp_path: Path, pipeline_topics: PipelineTopics
) -> Iterator[Callable[..., Run]]:
    """Start `streams run ... --stage copy --workers 2` over fresh topics; killed at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*, delay_ms: str) -> Run:
        source = topic_factory("in", partitions=PARTITIONS)
        sink = topic_factory("out", partitions=PARTITIONS)
        produce_numbered(cluster, source, COUNT)
        pipeline = f"runcli{uuid.uuid4().hex[:8]}"
        env = {
            **os.environ,
            "TEST_PIPELINE": pipeline,
            "TEST_INPUT": source,
            "TEST_OUTPUT": sink,
            "TEST_DELAY_MS": delay_ms,
            "STREAMS_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
            # the broker's minimum: a killed worker's partitions move within about 6 s
            "STREAMS_STAGE_SESSION_TIMEOUT_MS": "6000",
        }
        pipeline_topics(build_copy(pipeline, source, sink))
        log = tmp_path / f"{pipeline}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    STREAMS,
                    "run",
                    "tests.integration.pipelines:copy",
                    "--stage",
                    "copy",
                    "--workers",
                    str(WORKERS),
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                # its own process group: the cleanup below can end the supervisor and its workers
                start_new_session=True,
            )
        started.append(process)
        return Run(process, f"{pipeline}.copy", source, sink, log)

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        else:
            # the supervisor has ended; a worker it left behind would still be in its group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


def _committed(cluster: Cluster, group: str, topic: str) -> int:
    """Records the group has committed so far (sum over partitions)."""
    consumer = Consumer(cluster.client_config(**{"group.id": group}))
    try:
        offsets = consumer.committed(
            [TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10
        )
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in offsets)


def _wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, run: Run) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        assert run.process.poll() is None, f"supervisor ended early:\n{run.log_text()}"
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}:\n{run.log_text()}")


def _children(pid: int) -> set[int]:
    """Live child processes of ``pid``, from the ppid field of /proc/*/stat (zombies left out)."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after it
        state, ppid = text[text.rindex(")") + 2 :].split()[:2]
        if int(ppid) == pid and state != "Z":
            children.add(int(text.split(" ", 1)[0]))
    return children


def _stop(run: Run) -> int:
    run.process.send_signal(signal.SIGTERM)
    try:
        return run.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        message = f"supervisor still running 60 s after SIGTERM:\n{run.log_text()}"
        raise AssertionError(message) from None


def test_sigterm_to_the_supervisor_stops_every_worker_cleanly_and_output_is_exactly_once(
    cluster: Cluster, start_run: Callable[..., Run]
) -> None:
    run = start_run(delay_ms="0.5")
    _wait_for(lambda: len(_children(run.process.pid)) == WORKERS, 30, "two workers", run)

    _wait_for(
        lambda: _committed(cluster, run.group, run.source) >= COUNT,
        60,
        f"group {run.group} to commit {COUNT}",
        run,
    )

    assert _stop(run) == 0, run.log_text()
    log = run.log_text()
    assert log.count("stopped cleanly") == WORKERS, log
    assert "restarting" not in log, log
    check_exactly_once(read_committed(cluster, run.sink, PARTITIONS, expect=COUNT), COUNT)


def test_supervisor_restarts_a_sigkilled_worker_and_output_stays_exactly_once(
    cluster: Cluster, start_run: Callable[..., Run]
) -> None:
    # 2 ms a record: two workers need about 6 s for all of it, so the kill lands mid-stream
    run = start_run(delay_ms="2")
    _wait_for(lambda: len(_children(run.process.pid)) == WORKERS, 30, "two workers", run)
    first = _children(run.process.pid)
    _wait_for(
        lambda: _committed(cluster, run.group, run.source) >= COUNT // 10,
        60,
        "records to flow",
        run,
    )
    victim = min(first)

    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        now = _children(run.process.pid)
        return victim not in now and len(now) == WORKERS and bool(now - first)

    _wait_for(replaced, 30, f"a new worker in place of {victim}", run)
    assert _committed(cluster, run.group, run.source) < COUNT, "the kill landed after the end"
    _wait_for(
        lambda: _committed(cluster, run.group, run.source) >= COUNT,
        90,
        f"group {run.group} to commit {COUNT}",
        run,
    )
    assert _stop(run) == 0, run.log_text()
    log = run.log_text()
    assert "worker ended; restarting" in log, log
    assert "exit_code=-9" in log, log
    check_exactly_once(read_committed(cluster, run.sink, PARTITIONS, expect=COUNT), COUNT)


def test_ctrl_c_in_a_terminal_drains_and_commits_instead_of_aborting(
    cluster: Cluster, start_run: Callable[..., Run]
) -> None:
    """Ctrl-C sends SIGINT to the whole foreground process group: supervisor and workers.

    Each worker then gets SIGINT from the terminal and SIGTERM forwarded by the supervisor; the
    second signal means "abort now", so the shutdown must not turn into two signals.
    """
    run = start_run(delay_ms="2")
    _wait_for(lambda: len(_children(run.process.pid)) == WORKERS, 30, "two workers", run)
    _wait_for(
        lambda: _committed(cluster, run.group, run.source) >= COUNT // 10,
        60,
        "records to flow",
        run,
    )

    os.killpg(run.process.pid, signal.SIGINT)

    code = run.process.wait(timeout=60)
    log = run.log_text()
    assert "aborting the open transaction" not in log, log
    assert log.count("stopped cleanly") == WORKERS, log
    assert code == 0, log


# --- arguments, in-process: errors before any process starts --------------------------------


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["run", "tests.integration.pipelines:copy", *args])


def test_an_unknown_stage_exits_1_naming_the_known_stages() -> None:
    result = _run("--stage", "nosuch")

    assert result.exit_code == 1, result.output
    error = result.stderr.splitlines()[0]
    assert error.startswith("error: "), result.stderr
    assert "'nosuch'" in error
    assert "(stages: copy)" in error


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("--stage", "copy", "--all"), "Error: give --stage S (one or more) or --all, not both"),
        ((), "Error: give --stage S (one or more), or --all for every stage"),
    ],
    ids=["both", "neither"],
)
def test_stage_and_all_together_or_neither_are_usage_errors_exit_2(
    args: tuple[str, ...], error: str
) -> None:
    result = _run(*args)

    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[-1] == error
