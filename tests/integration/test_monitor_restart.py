"""`streams monitor` across a restart of its broker (a private one, restarted by the test).

Found in the open issue "Nothing stalls" (item 4): after a broker restart the monitor never
sampled successfully again. Every DescribeConsumerGroups of its old admin client went
unanswered, so every sample failed with ``concurrent.futures.TimeoutError()``, whose message is
empty (``monitor sample failed: `` and ``"error": ""`` in ``/api/state``). The monitor now
rebuilds its Kafka clients after a failed sample, and an error message is never empty.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streams.config import KafkaSettings
from streams.lag import LagMonitor
from streams.localstack.process import free_port
from streams.localstack.stack import LocalStack
from streams.observability.server import Monitor
from streams.observability.stats_reader import StatsReader
from streams.runtime.publish import StatsPublisher
from streams.spec import STATS_TOPIC
from tests.chaos.harness import private_stack
from tests.integration.groups import commit_group_offsets

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# how long a recovered monitor may take to sample again after the broker answers: one failed
# sample (3 s request timeout), a new client, then a sample every second
RECOVERY_S = 60


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A broker of this module's own (no registry), so that it can be restarted."""
    started = private_stack(tmp_path_factory.mktemp("monitor-restart"))
    started.up(with_registry=False)
    try:
        yield started
    finally:
        started.down()


def _restart(stack: LocalStack, *, hard: bool = False) -> None:
    process = stack.kafka.process
    if hard:
        pid = process.running_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        while process.running_pid() is not None:
            time.sleep(0.1)
        process.clear_stale()
    else:
        process.stop(timeout_s=60)
    stack.up(with_registry=False)


def _topics(admin: AdminClient, *names: str) -> None:
    existing = admin.list_topics(timeout=30).topics
    wanted = [
        NewTopic(STATS_TOPIC, 1, 1, config={"cleanup.policy": "compact"})
        if name == STATS_TOPIC
        else NewTopic(name, 2, 1)
        for name in names
        if name not in existing
    ]
    for future in admin.create_topics(wanted).values() if wanted else ():
        future.result(timeout=60)


def _setup(bootstrap: str) -> tuple[str, str]:
    topic, group = f"restart-{uuid.uuid4().hex[:6]}", f"restart-g-{uuid.uuid4().hex[:6]}"
    _topics(AdminClient({"bootstrap.servers": bootstrap}), topic, STATS_TOPIC)
    producer = Producer({"bootstrap.servers": bootstrap})
    for n in range(20):
        producer.produce(topic, b"x", partition=n % 2)
    assert producer.flush(30) == 0
    commit_group_offsets(bootstrap, group, {(topic, 0): 3, (topic, 1): 4})
    return topic, group


def _publish(bootstrap: str, group: str, consumed: int) -> None:
    publisher = StatsPublisher(KafkaSettings(bootstrap_servers=bootstrap))
    publisher.publish({"kind": "stage", "group": group, "slot": 0, "consumed": consumed})
    publisher.close()


def test_monitor_samples_again_after_a_broker_restart(stack: LocalStack) -> None:
    bootstrap = stack.settings.bootstrap_servers
    topic, group = _setup(bootstrap)
    settings = KafkaSettings(bootstrap_servers=bootstrap)
    monitor = Monitor(
        kafka=settings,
        interval_s=1.0,
        lag=LagMonitor(settings, request_timeout_s=3.0),
        stats=StatsReader(settings, stale_after_s=300),
    )
    monitor.start("127.0.0.1", 0)
    try:

        def lags() -> dict[int, int | None]:
            snapshot = monitor.snapshot
            assert snapshot is not None
            return {
                p.partition: p.lag
                for g in snapshot.groups
                if g.group == group
                for p in g.partitions
            }

        deadline = time.monotonic() + 30
        while lags() != {0: 7, 1: 6} and time.monotonic() < deadline:
            time.sleep(0.2)
        assert lags() == {0: 7, 1: 6}

        _restart(stack)
        restarted_at = time.time()
        # what only a sample taken after the restart can show
        commit_group_offsets(bootstrap, group, {(topic, 0): 10, (topic, 1): 10})
        _publish(bootstrap, f"{group}.stage", consumed=77)
        errors: list[str] = []
        deadline = time.monotonic() + RECOVERY_S
        while time.monotonic() < deadline:
            snapshot = monitor.snapshot
            assert snapshot is not None
            if snapshot.error is not None:
                errors.append(snapshot.error)
            workers = [w for w in snapshot.workers if w.group == f"{group}.stage"]
            fresh = snapshot.taken_at > restarted_at and snapshot.error is None
            if fresh and lags() == {0: 0, 1: 0} and workers:
                break
            time.sleep(0.5)
        snapshot = monitor.snapshot
        assert snapshot is not None
        assert snapshot.taken_at > restarted_at, (
            f"no good sample in {RECOVERY_S} s after the restart; errors: {set(errors)}"
        )
        assert snapshot.error is None
        assert lags() == {0: 0, 1: 0}
        assert [w.counters["consumed"] for w in snapshot.workers if w.group == f"{group}.stage"]
        assert "" not in errors, errors
    finally:
        monitor.close()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - loopback URL
            return int(answer.status), bytes(answer.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, bytes(error.read())


@pytest.mark.chaos_broker
def test_streams_monitor_recovers_from_clean_and_hard_broker_restarts(
    stack: LocalStack, tmp_path: Path
) -> None:
    """The `streams monitor` process, over two restarts: a SIGTERM, then a SIGKILL."""
    bootstrap = stack.settings.bootstrap_servers
    topic, group = _setup(bootstrap)
    port = free_port()
    env = {**os.environ, "STREAMS_BOOTSTRAP_SERVERS": bootstrap}
    with (tmp_path / "monitor.log").open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams.cli.main",
                "monitor",
                "--port",
                str(port),
                "--interval=1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        for n, hard in enumerate((False, True)):
            _restart(stack, hard=hard)
            restarted_at = time.time()
            committed = 5 + n
            commit_group_offsets(bootstrap, group, {(topic, 0): committed, (topic, 1): committed})
            deadline = time.monotonic() + RECOVERY_S
            state: dict[str, Any] = {}
            while time.monotonic() < deadline:
                try:
                    state = json.loads(_get(url + "/api/state")[1])
                except OSError:
                    state = {}
                groups = [g for g in state.get("groups", []) if g["group"] == group]
                lag = [p["lag"] for g in groups for p in g["partitions"]]
                fresh = float(state.get("taken_at") or 0) > restarted_at
                if fresh and state.get("error") is None and lag == [10 - committed] * 2:
                    break
                assert state.get("error") != "", "an empty error message"
                time.sleep(0.5)
            else:
                log_text = (tmp_path / "monitor.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"restart {n}: no fresh sample; last {state}\n{log_text}")
            assert _get(url + "/health")[0] == 200
        log_text = (tmp_path / "monitor.log").read_text(errors="replace")
        assert "monitor sample failed: \n" not in log_text
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
