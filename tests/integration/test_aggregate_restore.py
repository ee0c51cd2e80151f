"""Aggregate state through kills and takeovers, with worker processes on the real broker.

A running sum per key (no window, an output after every record): every output must be the sum
of its key's inputs so far, so a worker that started folding before its state was restored
(or restored it twice) shows as an output that does not match. After the kills, the state
restored from the changelog must equal, key by key, the state recomputed from the input up to
the committed offsets: the state the killed worker had committed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streams.aggregate.restore import RestoreProgress, Restorer
from streams.aggregate.state import PartitionState, StateCodec, window_key
from streams.config import KafkaSettings
from streams.topics import ensure_topics
from streams.windows import TABLE
from tests.chaos.aggregate_pipeline import PARTITIONS, RUNNING_STAGE, build_running, topics
from tests.integration.conftest import Cluster
from tests.integration.eos import ROOT, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEYS = 20


class _Run:
    def __init__(self, cluster: Cluster, tmp_path: Path) -> None:
        self.cluster = cluster
        self.name = f"aggrestore{uuid.uuid4().hex[:6]}"
        self.pipeline = build_running(self.name)
        spec = self.pipeline.component(RUNNING_STAGE)
        assert spec.kind == "aggregate"
        self.spec = spec
        self.kafka = KafkaSettings(bootstrap_servers=cluster.bootstrap_servers)
        self.tmp = tmp_path
        self.log = tmp_path / "workers.log"
        self.fed = 0
        ensure_topics(self.pipeline, kafka=self.kafka)

    def start(self, slot: int) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "CHAOS_NAME": self.name,
            "STREAMS_BOOTSTRAP_SERVERS": self.cluster.bootstrap_servers,
            "STREAMS_STATE_DIR": str(self.tmp / "state"),
            "STREAMS_STAGE_SESSION_TIMEOUT_MS": "6000",
            "STREAMS_STAGE_BATCH_MAX_MS": "300",
        }
        with self.log.open("ab") as out:
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

    def feed(self, count: int) -> None:
        producer = Producer(self.cluster.client_config(**{"enable.idempotence": True}))
        for n in range(self.fed, self.fed + count):
            producer.produce(topics(self.name)[0], str(n).encode(), key=f"k{n % KEYS}".encode())
            if n % 500 == 0:
                producer.poll(0)
                time.sleep(0.05)  # a steady stream: the faults land while records flow
        assert producer.flush(60) == 0
        self.fed += count

    def committed(self) -> dict[int, int]:
        consumer = Consumer(self.cluster.client_config(**{"group.id": self.spec.group_id}))
        try:
            parts = [TopicPartition(self.spec.inputs[0], p) for p in range(PARTITIONS)]
            return {tp.partition: max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10)}
        finally:
            consumer.close()

    def wait_committed(self, total: int, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if sum(self.committed().values()) >= total:
                return
            time.sleep(0.5)
        raise AssertionError(
            f"not all {total} committed: {self.committed()}\n" + self.log.read_text()[-3000:]
        )

    def wait_log(self, prefix: str, text: str, count: int, timeout_s: float = 60) -> None:
        """Until ``count`` lines of the worker ``prefix`` (``[running/1]``) contain ``text``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            lines = self.log.read_text(errors="replace").splitlines()
            if sum(1 for line in lines if line.startswith(prefix) and text in line) >= count:
                return
            time.sleep(0.3)
        raise AssertionError(f"{prefix} never logged {text!r} {count} times")

    def wait_no_open_transaction(self, topic: str, timeout_s: float = 120) -> None:
        """Until no transaction is open on ``topic``: its last stable offset is its end.

        A worker SIGKILLed mid-transaction and not restarted leaves it open until the
        coordinator aborts it (transaction.timeout.ms, 30 s, plus its sweep); until then a
        read_committed reader sees nothing past its first record, committed output after it
        included.
        """
        settings = self.cluster.client_config(**{"group.id": f"lso-{uuid.uuid4().hex}"})
        committed = Consumer({**settings, "isolation.level": "read_committed"})
        uncommitted = Consumer({**settings, "isolation.level": "read_uncommitted"})
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
                stable = [committed.get_watermark_offsets(tp, timeout=10)[1] for tp in parts]
                high = [uncommitted.get_watermark_offsets(tp, timeout=10)[1] for tp in parts]
                if stable == high:
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{topic}: still open after {timeout_s:.0f} s: {stable} < {high}"
                    )
                time.sleep(1)
        finally:
            committed.close()
            uncommitted.close()

    def restored(self) -> dict[str, int]:
        """The state as a fresh worker restores it from the changelog, by key."""
        restorer = Restorer(
            group_id=self.spec.group_id,
            changelog=self.spec.changelog_topic,
            kafka=self.kafka,
            store_kind="memory",
            state_dir=self.tmp / "check",
            progress=RestoreProgress(),
        )
        found = {}
        for partition, store in restorer.restore(range(PARTITIONS)).items():
            state = PartitionState(partition, store, window=None, codec=StateCodec(), initial=int)
            for key in (f"k{k}".encode() for k in range(KEYS)):
                value = state.current(window_key(TABLE, key))
                if store.get(window_key(TABLE, key)) is not None:
                    found[key.decode()] = value
        return found

    def inputs_by_partition(self) -> dict[int, list[tuple[int, str, int]]]:
        found: dict[int, list[tuple[int, str, int]]] = defaultdict(list)
        for m in read_topic(self.cluster.client_config(), self.spec.inputs[0], PARTITIONS):
            found[m.partition()].append((m.offset(), m.key().decode(), int(m.value())))
        return {p: sorted(records) for p, records in found.items()}


def test_restarted_and_taking_over_workers_restore_state_before_their_first_output(
    cluster: Cluster, tmp_path: Path
) -> None:
    run = _Run(cluster, tmp_path)
    first = run.start(0)
    second: subprocess.Popen[bytes] | None = None
    try:
        run.feed(3000)
        run.wait_committed(3000)
        second = run.start(1)  # a rebalance: slot 1 takes half the partitions, restoring them
        run.wait_log("[running/1]", "state restored", 1)
        run.feed(3000)
        run.wait_committed(6000)
        first.send_signal(signal.SIGKILL)  # slot 1 takes slot 0's partitions after the session
        first.wait(timeout=30)
        run.wait_log("[running/1]", "state restored", 2)
        run.feed(2000)
        run.wait_committed(8000)
        run.feed(1000)
        second.send_signal(signal.SIGKILL)  # mid-stream: an open transaction is lost
        second.wait(timeout=30)
        committed = run.committed()  # what the killed workers had committed
        before: dict[str, int] = defaultdict(int)
        for partition, records in run.inputs_by_partition().items():
            for offset, key, n in records:
                if offset < committed[partition]:
                    before[key] += n
        assert run.restored() == dict(before)  # the state after the kill, key by key
        first = run.start(0)  # restarts: restores every partition whole (no checkpoint)
        run.wait_committed(9000)
    finally:
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                worker.wait(timeout=60)
    # slot 1 was killed mid-transaction and not restarted: its transaction holds the output
    # back from read_committed readers until the coordinator aborts it
    run.wait_no_open_transaction(topics(run.name)[1])
    totals: dict[str, int] = defaultdict(int)
    want: dict[str, list[int]] = defaultdict(list)
    for records in run.inputs_by_partition().values():
        for _offset, key, n in records:
            totals[key] += n
            want[key].append(totals[key])
    got: dict[str, list[int]] = defaultdict(list)
    for message in read_topic(cluster.client_config(), topics(run.name)[1], PARTITIONS):
        out = json.loads(message.value())
        got[out["key"]].append(out["value"])
    for key in sorted(want):  # every output the running sum: restored before folding
        first_wrong = next(
            (i for i, (a, b) in enumerate(zip(got[key], want[key], strict=False)) if a != b), None
        )
        assert got[key] == want[key], (
            f"{key}: {len(got[key])} outputs for {len(want[key])} inputs, first wrong at "
            f"{first_wrong}: {got[key][first_wrong - 2 : first_wrong + 3] if first_wrong else ''}"
            f" vs {want[key][first_wrong - 2 : first_wrong + 3] if first_wrong else ''}"
        )
    assert run.restored() == dict(totals)
    text = run.log.read_text()
    assert text.count("state restored") >= 4  # slot 1 twice, slot 0 at least twice
    assert "restoring it whole" in text
