"""A local broker killed with SIGKILL leaves a stale pid file; `up` stops on it, and
`up --clear-stale` starts the broker again on its data: committed records survive."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streams.exceptions import StalePidFileError
from streams.localstack.process import process_alive
from streams.localstack.stack import LocalStack

pytestmark = pytest.mark.integration


def _write(bootstrap: str, topic: str, count: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(count):
        producer.produce(topic, key=str(i).encode(), value=f"v{i}".encode())
    assert producer.flush(30) == 0


def _read_all(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"recovery-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while len(values) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values.append(message.value() or b"")
    finally:
        consumer.close()
    return values


def test_up_clear_stale_restarts_a_killed_broker_on_its_data(tmp_path: Path) -> None:
    stack = LocalStack.private(tmp_path / "stack")
    bootstrap = stack.settings.bootstrap_servers
    try:
        stack.up(with_registry=False)
        topic = f"recovery-{uuid.uuid4().hex[:8]}"
        _write(bootstrap, topic, 500)

        pid = stack.kafka.process.running_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while process_alive(pid) and time.monotonic() < deadline:  # a zombie counts as dead
            time.sleep(0.1)
        assert not process_alive(pid)
        assert stack.status().kafka.stale_pid_file

        with pytest.raises(StalePidFileError, match=f"process {pid} is not running"):
            stack.up(with_registry=False)
        assert stack.kafka.process.pid_file.exists(), "a plain up leaves the pid file alone"

        said: list[str] = []
        report = stack.up(with_registry=False, clear_stale=True, progress=said.append)
        assert report.cleared_stale == ["kafka"]
        assert report.started == ["kafka"]
        assert any(f"removed a stale pid file (process {pid} no longer runs" in m for m in said)
        values = _read_all(bootstrap, topic, 500)
        assert values == [f"v{i}".encode() for i in range(500)]
    finally:
        stack.down()
