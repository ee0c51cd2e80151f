"""Slots on the real broker: twins refused before they fence, stable slots after a SIGKILL,
rolling restarts, as `streams run` runs them (``HOSTNAME=enrich-N`` stands in for a pod).

Each test starts `streams run` subprocesses (a supervisor and its workers) over fresh topics
and reads the group's committed offsets, the output's last stable offsets and the workers'
logs; each claim has a control that shows the old behaviour failing it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import Consumer, IsolationLevel, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.kafka import admin as admin_specs
from streams.localstack.process import free_port
from tests.integration.conftest import Cluster, PipelineTopics, TopicFactory
from tests.integration.eos import check_exactly_once, produce_numbered, read_committed
from tests.integration.pipelines import build_copy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
STREAMS = str(Path(sys.executable).with_name("streams"))
PARTITIONS = 4


@dataclass
class Run:
    """One `streams run` subprocess and its log."""

    process: subprocess.Popen[bytes]
    log: Path
    started_at: float

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Stage:
    """Fresh topics and a pipeline name for the copy stage; ``start`` runs `streams run`."""

    cluster: Cluster
    group: str
    source: str
    sink: str
    env: dict[str, str]
    tmp_path: Path
    started: list[subprocess.Popen[bytes]]
    admins: list[AdminClient] = field(default_factory=list)

    def start(self, name: str, *args: str, **env: str) -> Run:
        log = self.tmp_path / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [STREAMS, "run", "tests.integration.pipelines:copy", "--stage", "copy", *args],
                cwd=ROOT,
                env={**os.environ, **self.env, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # killpg ends the supervisor and its workers
            )
        self.started.append(process)
        return Run(process, log, time.monotonic())

    def committed(self) -> int:
        consumer = Consumer(self.cluster.client_config(**{"group.id": self.group}))
        try:
            offsets = consumer.committed(
                [TopicPartition(self.source, p) for p in range(PARTITIONS)], timeout=10
            )
        finally:
            consumer.close()
        return sum(max(tp.offset, 0) for tp in offsets)

    def admin(self) -> AdminClient:
        """One admin client for the test: a new one per look took seconds on a busy broker."""
        if not self.admins:
            self.admins.append(AdminClient(self.cluster.client_config()))
        return self.admins[0]

    def stable_offsets(self) -> tuple[list[int], list[int]]:
        """The output's last stable offset and high watermark, per partition."""
        admin = self.admin()
        wanted = {TopicPartition(self.sink, p): admin_specs.latest() for p in range(PARTITIONS)}
        found = []
        for isolation in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED):
            futures = admin.list_offsets(wanted, isolation_level=isolation, request_timeout=10)
            by_partition = {tp.partition: f.result(timeout=15).offset for tp, f in futures.items()}
            found.append([by_partition[p] for p in range(PARTITIONS)])
        return found[0], found[1]


@pytest.fixture
def stage(
    cluster: Cluster, topic_factory: TopicFactory, pipeline_topics: PipelineTopics, tmp_path: Path
) -> Iterator[Stage]:
    source = topic_factory("in", partitions=PARTITIONS)
    sink = topic_factory("out", partitions=PARTITIONS)
    pipeline = f"slots{uuid.uuid4().hex[:8]}"
    env = {
        "TEST_PIPELINE": pipeline,
        "TEST_INPUT": source,
        "TEST_OUTPUT": sink,
        "STREAMS_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
        # the broker's minimum: a killed worker's partitions move within about 6 s
        "STREAMS_STAGE_SESSION_TIMEOUT_MS": "6000",
        "STREAMS_STAGE_STATS_INTERVAL_S": "1",
    }
    for attempt in range(5):
        try:
            pipeline_topics(build_copy(pipeline, source, sink))
            break
        except KafkaException:
            # topics created a moment ago can be missing from a busy broker's metadata
            if attempt == 4:
                raise
            time.sleep(2)
    started: list[subprocess.Popen[bytes]] = []
    yield Stage(cluster, f"{pipeline}.copy", source, sink, env, tmp_path, started)
    for process in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)


def _wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, *runs: Run) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    logs = "\n".join(run.text()[-3000:] for run in runs)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}:\n{logs}")


def _producer_resets(run: Run) -> list[int]:
    """``producer_resets`` of every stats line the run's workers logged."""
    return [int(n) for n in re.findall(r'"producer_resets": (\d+)', run.text())]


class _Feeder(threading.Thread):
    """Produces numbered records at about ``rate`` per second until stopped: load."""

    def __init__(self, stage: Stage, rate: int) -> None:
        super().__init__(daemon=True)
        self.stage, self.rate, self.sent = stage, rate, 0
        self.halt = threading.Event()

    def run(self) -> None:
        producer = Producer(
            self.stage.cluster.client_config(**{"enable.idempotence": True, "linger.ms": 5})
        )
        while not self.halt.is_set():
            for n in range(self.sent, self.sent + max(1, self.rate // 10)):
                producer.produce(self.stage.source, str(n).encode(), key=f"k{n % 50}".encode())
            self.sent += max(1, self.rate // 10)
            producer.poll(0)
            time.sleep(0.1)
        assert producer.flush(60) == 0


# -- three copies of one command: the old `docker compose --scale` ---------------------------


def test_two_more_copies_on_the_same_slot_refuse_within_10_s_and_the_live_one_is_untouched(
    stage: Stage,
) -> None:
    produce_numbered(stage.cluster, stage.source, 20_000)
    live = stage.start("live", TEST_DELAY_MS="1")
    _wait_for(lambda: stage.committed() >= 500, 90, "the first copy's progress", live)
    copies = [stage.start(f"copy{n}", TEST_DELAY_MS="1") for n in (1, 2)]
    for copy in copies:
        code = copy.process.wait(timeout=60)
        took = time.monotonic() - copy.started_at
        assert code == 4, copy.text()[-3000:]
        assert took < 10, f"refused after {took:.1f} s"
        refusal = [line for line in copy.text().splitlines() if "already runs" in line]
        assert len(refusal) == 1, copy.text()[-3000:]
        assert f"{stage.group}.0#" in refusal[0]  # names the twin's client.id
        assert "--take-over" in copy.text()  # the hint
        assert "stage started" not in copy.text()  # logged once its producer is initialised
    mark = stage.committed()
    _wait_for(lambda: stage.committed() >= mark + 500, 60, "the live copy going on", live)
    time.sleep(2)  # one more stats line after the refusals
    assert live.process.poll() is None, live.text()[-3000:]
    resets = _producer_resets(live)
    assert resets, "the live worker logged its stats"
    assert max(resets) == 0, live.text()[-3000:]
    assert "fenced" not in live.text()


def test_control_a_copy_started_with_take_over_fences_the_live_one(stage: Stage) -> None:
    produce_numbered(stage.cluster, stage.source, 20_000)
    live = stage.start("live", TEST_DELAY_MS="1")
    _wait_for(lambda: stage.committed() >= 500, 90, "the first copy's progress", live)
    stage.start("taker", "--take-over", TEST_DELAY_MS="1")
    assert live.process.wait(timeout=90) == 4, live.text()[-3000:]
    assert "fenced by another worker" in live.text()


# -- a SIGKILLed pod restarted on its slot ---------------------------------------------------


def _children(pid: int) -> set[int]:
    """Live child processes of ``pid`` (the ppid field of /proc/*/stat; zombies left out)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, ppid = text[text.rindex(")") + 2 :].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.add(int(text.split(" ", 1)[0]))
    return found


def _kill_pod(run: Run) -> None:
    """SIGKILL the workers (each in its own process group), then the supervisor: a pod dies."""
    workers = _children(run.process.pid)
    assert workers, run.text()[-2000:]
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    os.killpg(run.process.pid, signal.SIGKILL)


def _open_transaction(stage: Stage) -> bool:
    stable, high = stage.stable_offsets()
    return stable != high


def _report(what: str, figures: dict[str, float]) -> None:
    sys.stdout.write(f"{what}: {json.dumps(figures)}\n")  # seen with pytest -s


def _stall_after_kill(stage: Stage, *, restart_hostname: str) -> tuple[float, float]:
    """Kill a worker mid-transaction, restart one as ``restart_hostname``; return the seconds
    from the restart's launch until the output's LSO moves, and from the kill."""
    env = {
        "TEST_DELAY_MS": "4",
        "STREAMS_STAGE_STATIC_MEMBERSHIP": "true",  # as a StatefulSet runs it
        # short, so that the control's stall (about this long) fits in a test
        "STREAMS_STAGE_TRANSACTION_TIMEOUT_MS": "15000",
        # long batches: the kill lands inside an open transaction
        "STREAMS_STAGE_BATCH_MAX_MS": "4000",
    }
    produce_numbered(stage.cluster, stage.source, 40_000)
    for attempt in range(5):
        first = stage.start(f"pod{attempt}", "--slot-from-hostname", HOSTNAME="enrich-0", **env)
        _wait_for(lambda: stage.committed() >= 500, 90, "progress", first)
        _wait_for(lambda: _open_transaction(stage), 30, "an open transaction", first)
        _kill_pod(first)
        killed_at = time.monotonic()
        first.process.wait(timeout=30)
        stable, high = stage.stable_offsets()
        stuck = {p: stable[p] for p in range(PARTITIONS) if stable[p] < high[p]}
        if stuck:
            break  # the kill left a transaction open on these partitions
        # it committed between the look and the kill: the next start takes the slot over
    else:
        pytest.fail("five kills found no open transaction")
    restart = stage.start("restart", "--slot-from-hostname", HOSTNAME=restart_hostname, **env)

    def moved() -> bool:  # on every partition the dead transaction held back
        stable = stage.stable_offsets()[0]
        return all(stable[p] > offset for p, offset in stuck.items())

    _wait_for(moved, 90, "the LSO to move", restart)
    moved_at = time.monotonic()
    assert restart.process.poll() is None, restart.text()[-3000:]
    return moved_at - restart.started_at, moved_at - killed_at


def test_a_sigkilled_pod_restarted_with_its_hostname_moves_the_lso_within_5_s(
    stage: Stage,
) -> None:
    after_restart, after_kill = _stall_after_kill(stage, restart_hostname="enrich-0")
    assert after_restart < 5, f"LSO moved {after_restart:.1f} s after the restart"
    _report("stable slot", {"after_restart_s": after_restart, "after_kill_s": after_kill})


def test_control_a_new_slot_leaves_readers_stalled_for_about_the_transaction_timeout(
    stage: Stage,
) -> None:
    after_restart, after_kill = _stall_after_kill(stage, restart_hostname="enrich-1")
    # the coordinator aborts the dead transaction 15 s after it began (checked every 10 s)
    assert after_kill > 10, f"LSO moved {after_kill:.1f} s after the kill"
    _report("new slot", {"after_restart_s": after_restart, "after_kill_s": after_kill})


# -- kill -HUP: a rolling restart under load -------------------------------------------------


def test_a_rolling_restart_of_three_workers_under_load_loses_and_duplicates_nothing(
    stage: Stage,
) -> None:
    drain_s = 10.0
    feeder = _Feeder(stage, rate=600)
    feeder.start()
    run = stage.start(
        "rolling",
        "--workers",
        "3",
        TEST_DELAY_MS="1",
        STREAMS_STAGE_SHUTDOWN_DEADLINE_S=str(drain_s),
    )
    try:
        _wait_for(lambda: run.text().count("stage started") >= 3, 60, "three workers", run)
        _wait_for(lambda: stage.committed() >= 1000, 90, "progress", run)
        samples: list[tuple[float, int]] = []
        run.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 240
        while "rolling restart finished" not in run.text():
            assert time.monotonic() < deadline, run.text()[-5000:]
            assert run.process.poll() is None, run.text()[-5000:]
            samples.append((time.monotonic(), stage.committed()))
            time.sleep(0.5)
        samples.append((time.monotonic(), stage.committed()))
    finally:
        feeder.halt.set()
        feeder.join()
    text = run.text()
    assert text.count("rolling restart: worker ready") == 3, text[-5000:]
    assert "rolling restart stopped" not in text
    # the longest time the stage committed nothing while the roll ran
    longest, since = 0.0, samples[0]
    for at, committed in samples[1:]:
        if committed > since[1]:
            since = (at, committed)
        longest = max(longest, at - since[0])
    assert longest < drain_s, f"no progress for {longest:.1f} s during the roll"
    total = feeder.sent
    _wait_for(lambda: stage.committed() >= total, 180, "the stage to finish", run)
    run.process.send_signal(signal.SIGTERM)
    assert run.process.wait(timeout=60) == 0, text[-3000:]
    check_exactly_once(read_committed(stage.cluster, stage.sink, PARTITIONS, expect=total), total)
    figures = {"records": total, "longest_no_progress_s": round(longest, 1)}
    _report("rolling restart", figures)


# -- per-worker probes: --health-port P gives worker i P+i ------------------------------------


def _status(port: int, path: str, timeout: float = 2.0) -> int | None:
    """The HTTP status of a probe; None when it does not answer within ``timeout``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, TimeoutError, ConnectionError):
        return None


def _worker_on_slot(run: Run, slot: int) -> int:
    for pid in _children(run.process.pid):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if argv[argv.index(b"--slot") + 1] == str(slot).encode():
            return pid
    raise AssertionError(f"no worker on slot {slot}:\n{run.text()[-2000:]}")


def test_each_worker_gets_its_port_a_sigstop_fails_its_livez_and_the_rebalance_fails_none(
    stage: Stage,
) -> None:
    produce_numbered(stage.cluster, stage.source, 20_000)
    base = free_port()
    ports = [base, base + 1]
    run = stage.start("probes", "--workers", "2", "--health-port", str(base), TEST_DELAY_MS="2")
    _wait_for(lambda: all(_status(p, "/readyz") == 200 for p in ports), 90, "both /readyz", run)
    listing = next(line for line in run.text().splitlines() if "health probes:" in line)
    assert f"copy/0 http://127.0.0.1:{base}/livez" in listing
    assert f"copy/1 http://127.0.0.1:{base + 1}/livez" in listing
    stopped = _worker_on_slot(run, 1)

    def assignments() -> int:  # worker 0's rebalances
        return sum(
            "[copy/0]" in line and "partitions assigned" in line for line in run.text().splitlines()
        )

    before = assignments()
    os.kill(stopped, signal.SIGSTOP)
    try:
        # a stopped process answers nothing: the kubelet's probe times out, which fails it
        assert _status(ports[1], "/livez", timeout=2.0) is None
        # its session times out (6 s) and the group rebalances onto worker 0: never unlive
        seen = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            seen.append(_status(ports[0], "/livez"))
            time.sleep(0.3)
        assert set(seen) == {200}, seen
        assert assignments() > before, "the group rebalanced while the worker was stopped"
    finally:
        os.kill(stopped, signal.SIGCONT)
    _wait_for(lambda: _status(ports[1], "/livez") == 200, 60, "liveness after SIGCONT", run)
