"""Broker restarts under load cost seconds: four workers of one stage, a clean and a hard restart.

On a broker of its own: numbered records are fed at a steady rate into 8 partitions while
four worker processes, supervised by ``streams run --workers 4`` as in production, copy them.
The broker is stopped (SIGTERM) and started, then killed
(SIGKILL) and started. After each, every partition's committed offset must move again, and
the seconds from the broker answering to the slowest partition's next commit are recorded
(tests/chaos/results/broker-restart-*.json). At the end: every input exactly once, the
supervisor alive, no worker taken for a twin (exit 4) or restarted by its watchdog. Workers
that librdkafka aborted (SIGABRT in an admin request across the restart, librdkafka#4605) are
restarted by the supervisor and counted in the result (``worker_restarts``).

Before the fix, the commit after a restart hung in librdkafka until the 120 s watchdog killed
the worker, and a false twin test stopped slots for good (streams.kafka.transaction,
streams.stage.recovery).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from streams.config import KafkaSettings
from streams.localstack.stack import LocalStack
from streams.topics import ensure_topics
from tests.chaos.harness import private_stack, write_result
from tests.cluster import Cluster
from tests.integration.eos import ROOT, check_exactly_once, read_committed
from tests.integration.pipelines import build_copy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 8
WORKERS = 4
RATE = 400  # records per second
# Far below the watchdog (120 s): a bound that only a hang would break; the figures are kept.
BOUND_S = 60.0


class _Feeder(threading.Thread):
    """Numbered records at RATE per second until stopped; survives the broker's absence."""

    def __init__(self, config: dict[str, str], topic: str) -> None:
        super().__init__(daemon=True)
        self.producer = Producer({**config, "enable.idempotence": True, "linger.ms": 5})
        self.topic = topic
        self.fed = 0
        self.stop = threading.Event()

    def run(self) -> None:
        began = time.monotonic()
        while not self.stop.is_set():
            due = int((time.monotonic() - began) * RATE)
            while self.fed < due:
                try:
                    self.producer.produce(
                        self.topic, str(self.fed).encode(), key=f"k{self.fed % 50}".encode()
                    )
                except BufferError:
                    self.producer.poll(0.1)
                    continue
                self.fed += 1
            self.producer.poll(0.05)
        assert self.producer.flush(120) == 0


def _committed(config: dict[str, str], group: str, topic: str) -> dict[int, int]:
    consumer = Consumer({**config, "group.id": group})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=5)
        return {tp.partition: tp.offset for tp in found}
    except KafkaException:
        return {}
    finally:
        consumer.close()


def _restart(stack: LocalStack, kind: str) -> float:
    """Stop (clean) or kill (hard) the broker and start it; the moment it answers again."""
    process = stack.kafka.process
    if kind == "clean":
        process.stop(timeout_s=60)
    else:
        pid = process.running_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        while process.running_pid() is not None:
            time.sleep(0.1)
        process.clear_stale()
        time.sleep(3)
    stack.up(with_registry=False)
    return time.monotonic()


def _every_partition_moves(
    config: dict[str, str], group: str, topic: str, before: dict[int, int], since: float
) -> float:
    """Seconds from ``since`` until every partition's committed offset passed ``before``."""
    waiting = set(range(PARTITIONS))
    while waiting:
        assert time.monotonic() - since < 180, f"partitions {sorted(waiting)} did not move"
        now = _committed(config, group, topic)
        waiting = {p for p in waiting if now.get(p, -1) <= before.get(p, -1)}
        time.sleep(0.2)
    return round(time.monotonic() - since, 1)


def test_a_clean_and_a_hard_broker_restart_under_load_cost_seconds(tmp_path: Path) -> None:
    stack = private_stack(tmp_path)
    stack.up(with_registry=False)
    supervisor: subprocess.Popen[bytes] | None = None
    feeder: _Feeder | None = None
    try:
        kafka = KafkaSettings(bootstrap_servers=stack.settings.bootstrap_servers)
        config = kafka.client_config()
        name = f"restart{uuid.uuid4().hex[:8]}"
        source, sink = f"{name}.in", f"{name}.out"
        # the workers build the same stage with 4 partitions: the count only shapes the topics
        ensure_topics(build_copy(name, source, sink, partitions=PARTITIONS), kafka=kafka)
        group = f"{name}.copy"
        env = {
            "TEST_PIPELINE": name,
            "TEST_INPUT": source,
            "TEST_OUTPUT": sink,
            "STREAMS_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "STREAMS_STAGE_SESSION_TIMEOUT_MS": "10000",
        }
        log = tmp_path / "workers.log"
        with log.open("ab") as out:
            supervisor = subprocess.Popen(
                [sys.executable, "-m", "streams.cli.main", "run",
                 "tests.integration.pipelines:copy", "--stage", "copy",
                 "--workers", str(WORKERS)],
                cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        feeder = _Feeder(config, source)
        feeder.start()
        _every_partition_moves(config, group, source, {}, time.monotonic())
        recoveries: dict[str, float] = {}
        for kind in ("clean", "hard"):
            time.sleep(5)  # under load: transactions open when the broker goes
            before = _committed(config, group, source)
            answered = _restart(stack, kind)
            recoveries[kind] = _every_partition_moves(config, group, source, before, answered)
        time.sleep(3)
        feeder.stop.set()
        feeder.join(180)
        fed = feeder.fed
        cluster = Cluster(kafka.bootstrap_servers, "", source="a private stack")
        result = read_committed(cluster, sink, PARTITIONS, expect=fed, timeout_s=240)
        alive = supervisor.poll() is None
        text = log.read_text(errors="replace")
        write_result(
            "broker-restart",
            {
                "workers": WORKERS,
                "partitions": PARTITIONS,
                "rate": RATE,
                "fed": fed,
                "read": len(result.values),
                "recovery_s_after_broker_answers": recoveries,
                "stuck_calls_abandoned": text.count("_STUCK"),
                "worker_restarts": text.count("restarting in"),
                "worker_aborts": text.count("eonce->refcnt > 0"),
                "supervisor_alive_at_end": alive,
            },
        )
        check_exactly_once(result, fed)
        assert alive, f"streams run ended with {supervisor.returncode}"
        assert "fenced by another worker" not in text, "a worker took itself for a twin"
        assert "has not turned" not in text, "a worker was stuck until its watchdog"
        assert all(seconds < BOUND_S for seconds in recoveries.values()), recoveries
    finally:
        if feeder is not None:
            feeder.stop.set()
        if supervisor is not None and supervisor.poll() is None:
            supervisor.send_signal(signal.SIGTERM)
            supervisor.wait(90)
        stack.down()
