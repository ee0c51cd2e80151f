"""Where an aggregate worker starts the partitions it is given, and when it restores them.

As for a plain stage (tests/integration/test_assignment.py): a worker killed with a
transaction open leaves its offsets pending; the worker that takes its partitions over must
wait for them, even when its assignment changes meanwhile, and never start from the beginning
(streams.kafka.starts). An aggregate also restores its state on assignment: only once the
starts are known (the transaction that held them has ended), and before it folds a record.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streams.config import KafkaSettings
from streams.topics import ensure_topics
from tests.chaos.aggregate_pipeline import PARTITIONS, RUNNING_STAGE, build_running, topics
from tests.integration.conftest import Cluster
from tests.integration.eos import ROOT
from tests.integration.test_stage_faults import _stop, _wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PER_PARTITION = 60
COMMITTED = 5  # offsets committed on every partition before the workers start
PENDING = 10  # offsets sent by a transaction left open


def _worker(
    name: str, cluster: Cluster, slot: int, state: Path, log: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CHAOS_NAME": name,
        "STREAMS_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
        "STREAMS_STATE_DIR": str(state),
        "STREAMS_STAGE_SESSION_TIMEOUT_MS": "6000",
        "STREAMS_STAGE_STATS_INTERVAL_S": "5",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams.runtime.worker",
                "tests.chaos.aggregate_pipeline:running",
                "--stage",
                RUNNING_STAGE,
                "--slot",
                str(slot),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _outputs(cluster: Cluster, topic: str) -> dict[str, list[int]]:
    """The running sums written so far (read_committed), by key, in order."""
    reader = Consumer(
        cluster.client_config(
            **{"group.id": f"starts-{uuid.uuid4().hex}", "isolation.level": "read_committed"}
        )
    )
    found: dict[str, list[int]] = defaultdict(list)
    try:
        reader.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        idle = 0
        while idle < 3:
            batch = reader.consume(500, timeout=0.5)
            idle = 0 if batch else idle + 1
            for message in batch:
                if message.error() is None:
                    out = json.loads(message.value() or b"{}")
                    found[out["key"]].append(out["value"])
        return dict(found)
    finally:
        reader.close()


def test_an_aggregate_starts_at_offsets_a_stopped_workers_transaction_held_then_restores(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Offsets 5 committed on every partition (with no state: the sums start there), then a
    transaction that sends offsets 10 and stays open. A worker takes the partitions over; a
    second joins while the first waits, which changes its assignment. Once the transaction is
    aborted, every key's outputs must be the running sums of records 5..59 exactly: a start at
    0 (librdkafka's own fetch falls back to auto.offset.reset) shows as other sums and more
    outputs, a fold before the offsets were known as outputs before the abort."""
    name = f"aggstarts{uuid.uuid4().hex[:6]}"
    pipeline = build_running(name)
    spec = pipeline.component(RUNNING_STAGE)
    assert spec.kind == "aggregate"
    ensure_topics(pipeline, kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers))
    source, sink = topics(name)
    producer = Producer(cluster.client_config())
    for p in range(PARTITIONS):
        for i in range(PER_PARTITION):
            producer.produce(source, str(i).encode(), key=f"k{p}".encode(), partition=p)
    assert producer.flush(30) == 0

    member = Consumer(
        cluster.client_config(**{"group.id": spec.group_id, "enable.auto.commit": False})
    )
    member.subscribe([source])
    _wait_for(lambda: member.poll(0.2) is not None or len(member.assignment()) == 4, 60, "join")
    member.commit(
        offsets=[TopicPartition(source, p, COMMITTED) for p in range(PARTITIONS)],
        asynchronous=False,
    )
    stray = Producer(
        cluster.client_config(
            **{"transactional.id": f"{spec.group_id}.9", "transaction.timeout.ms": 120_000}
        )
    )
    stray.init_transactions(30)
    stray.begin_transaction()
    stray.produce(sink, b"{}", partition=0)
    stray.send_offsets_to_transaction(
        [TopicPartition(source, p, PENDING) for p in range(PARTITIONS)],
        member.consumer_group_metadata(),
        30,
    )
    assert stray.flush(10) == 0
    member.close()

    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    workers: list[subprocess.Popen[bytes]] = []
    try:
        workers.append(_worker(name, cluster, 0, tmp_path / "state", logs[0]))
        _wait_for(lambda: "partitions assigned" in logs[0].read_text(), 60, "the first worker")
        time.sleep(4)  # its start waits for the open transaction
        workers.append(_worker(name, cluster, 1, tmp_path / "state", logs[1]))
        _wait_for(lambda: "partitions assigned" in logs[1].read_text(), 60, "the second worker")
        time.sleep(8)  # the assignments changed while the offsets were pending
        early = _outputs(cluster, sink)
        stray.abort_transaction(30)
        want_count = PARTITIONS * (PER_PARTITION - COMMITTED)
        _wait_for(
            lambda: sum(map(len, _outputs(cluster, sink).values())) >= want_count,
            120,
            "the output",
        )
        time.sleep(3)  # anything more (a restart at 0) would show up now
        got = _outputs(cluster, sink)
    finally:
        for worker in workers:
            _stop(worker)
    assert early == {}, f"folded while their offsets were pending: {early}"
    sums = [sum(range(COMMITTED, i + 1)) for i in range(COMMITTED, PER_PARTITION)]
    assert got == {f"k{p}": sums for p in range(PARTITIONS)}
    texts = [log.read_text(errors="replace") for log in logs]
    assert "waiting for the committed offsets" in texts[0]
    # whichever worker restored did so once the wait for the starts had ended, not before
    # (the first one, blocked in its rebalance callback while the second joined, can time out
    # waiting and exit 1 to be restarted: seen on this machine, left to the supervisor)
    restored = [text for text in texts if "state restored" in text]
    assert restored, texts[0][-3000:]
    for text in restored:
        assert "known; starting" in text, text[-3000:]
        assert text.index("known; starting") < text.index("state restored"), text[-3000:]
