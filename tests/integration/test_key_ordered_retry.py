"""Key-ordered retries on the real broker: per-key order survives retries, DLQ and restarts.

Each test also runs its control: the same input without the feature (or without the ledger
rebuilt on restart) comes out of order, so the order check is shown to catch disorder.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter, defaultdict
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streams import headers as h
from streams.codecs import raw
from streams.config import KafkaSettings, StageSettings
from streams.exceptions import RetryLater
from streams.kafka.messages import message_headers
from streams.pipeline import Pipeline
from streams.record import Record
from streams.retry import RetryPolicy
from streams.stage import StageRunner
from streams.stage.batch import TransactionBatch
from streams.stage.keyorder import KeyOrdering
from tests.integration.conftest import Cluster, PipelineTopics
from tests.integration.eos import AbortEveryThirdRunner, read_topic

pytestmark = pytest.mark.integration

PARTITIONS = 2


def _produce(cluster: Cluster, topic: str, values: list[tuple[str, str]]) -> None:
    producer = Producer(cluster.client_config(**{"enable.idempotence": True}))
    for key, value in values:
        producer.produce(topic, value.encode(), key=key.encode())
    assert producer.flush(30) == 0


def _read(cluster: Cluster, topic: str) -> list[Any]:
    return read_topic(cluster.client_config(), topic, PARTITIONS)


def _sequences(messages: list[Any]) -> dict[str, list[int]]:
    """Per key, the record numbers in the order the output holds them (one key, one partition)."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for message in messages:
        key, number = message.value().decode().split(":")
        by_key[key].append(int(number))
    return dict(by_key)


def _stage(
    name: str, *, key_ordered: bool, tiers: tuple[float, ...], fails: dict[str, int]
) -> tuple[Pipeline, str, str, Counter[str], dict[str, float]]:
    """A copy stage whose handler fails the first ``fails[value]`` attempts of some records."""
    pipeline = Pipeline(name, partitions=PARTITIONS)
    source, sink = pipeline.topic(f"{name}.in"), pipeline.topic(f"{name}.out")
    attempts: Counter[str] = Counter()
    done_at: dict[str, float] = {}

    @pipeline.stage(
        "copy",
        inputs=[source],
        outputs={sink: raw()},
        retry=RetryPolicy(tiers=tiers, max_attempts=3, jitter=0.0, key_ordered=key_ordered),
    )
    def copy(record: Record[bytes]) -> bytes:
        value = record.value.decode()
        attempts[value] += 1
        if attempts[value] <= fails.get(value, 0):
            raise RetryLater(f"{value} fails attempt {attempts[value]}")
        done_at[value] = time.monotonic()
        return record.value

    return pipeline, source, sink, attempts, done_at


def _interleaved(keys: int, per_key: int, first: int = 0) -> list[tuple[str, str]]:
    return [(f"k{k}", f"k{k}:{i}") for i in range(first, per_key) for k in range(keys)]


@pytest.mark.parametrize("key_ordered", [True, False], ids=["key-ordered", "control"])
def test_per_key_order_survives_retries_and_a_dead_letter(
    cluster: Cluster, pipeline_topics: PipelineTopics, *, key_ordered: bool
) -> None:
    fails = {
        "k1:3": 1,  # one retry
        "k4:2": 2,  # two retries: waits in the first tier, then the second
        "k2:5": 9,  # never succeeds: dead-lettered after 3 attempts; k2's others then go on
    }
    name = f"kord{uuid.uuid4().hex[:6]}"
    pipeline, source, sink, attempts, done_at = _stage(
        name, key_ordered=key_ordered, tiers=(0.5, 1.0), fails=fails
    )
    pipeline_topics(pipeline)
    _produce(cluster, source, _interleaved(keys=6, per_key=15))
    runner = StageRunner(
        pipeline.get("copy"),
        kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers),
        settings=StageSettings(stats_interval_s=60),
    )
    runner.run(idle_timeout_s=6)

    output = _read(cluster, sink)
    values = Counter(m.value().decode() for m in output)
    expected = {f"k{k}:{i}" for k in range(6) for i in range(15)} - {"k2:5"}
    assert set(values) == expected, "lost or unexpected records"
    assert max(values.values()) == 1, "duplicates"
    dead = _read(cluster, pipeline.get("copy").dlq_topic)
    assert [m.value() for m in dead] == [b"k2:5"]
    assert attempts["k2:5"] == 3

    sequences = _sequences(output)
    in_order = {key: seq == sorted(seq) for key, seq in sequences.items()}
    if key_ordered:
        assert all(in_order.values()), sequences
        # the followers of k1, k2 and k4 were parked (and k4's moved on to the second tier)
        assert runner.stats.parked >= 11 + 9 + 12
        # keys without a failure were not held up by the waiting ones
        assert done_at["k0:14"] < done_at["k1:3"]
        assert done_at["k5:14"] < done_at["k4:2"]
    else:
        assert runner.stats.parked == 0
        assert not in_order["k1"], "control: without key order k1:3 comes after k1:14"
        assert not in_order["k4"]
    assert in_order["k0"], "a key without failures is in order either way"


@pytest.mark.parametrize("rebuild", [True, False], ids=["key-ordered", "control-no-rebuild"])
def test_a_restarted_worker_rebuilds_the_ledger_and_keeps_the_order(
    cluster: Cluster,
    pipeline_topics: PipelineTopics,
    monkeypatch: pytest.MonkeyPatch,
    *,
    rebuild: bool,
) -> None:
    name = f"kordr{uuid.uuid4().hex[:6]}"
    pipeline, source, sink, _attempts, _done = _stage(
        name, key_ordered=True, tiers=(4.0,), fails={"k0:2": 1}
    )
    pipeline_topics(pipeline)
    _produce(cluster, source, _interleaved(keys=3, per_key=8))

    def runner() -> StageRunner:
        return StageRunner(
            pipeline.get("copy"),
            kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers),
            settings=StageSettings(stats_interval_s=60),
        )

    # the first worker stops while k0:2 waits in retry (due 4 s after its failure) with
    # k0's later records parked behind it
    first = runner()
    running = threading.Thread(target=first.run)
    running.start()
    # stop it once every later record of k0 is parked (k0:2 itself is due only after 4 s)
    deadline = time.monotonic() + 30
    while first.stats.parked < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    first.request_stop()
    running.join(timeout=60)
    assert first.stats.parked == 5
    retry_topic = pipeline.get("copy").retry_topics[0]
    waiting = _read(cluster, retry_topic)
    assert sorted(m.value() for m in waiting) == [f"k0:{i}".encode() for i in range(2, 8)]
    parked = [m for m in waiting if m.value() != b"k0:2"]
    assert all(h.get(message_headers(m), h.PARKED_BEHIND) for m in parked)

    # more records of k0 arrive while k0:2 still waits; a new worker must park them too
    _produce(cluster, source, [("k0", f"k0:{i}") for i in range(8, 12)])
    if not rebuild:
        monkeypatch.setattr(KeyOrdering, "rebuild", lambda *_args: None)
    second = runner()
    second.run(idle_timeout_s=7)

    sequences = _sequences(_read(cluster, sink))
    assert sorted(sequences["k0"]) == list(range(12)), "lost or duplicated records"
    assert sequences["k1"] == list(range(8))
    if rebuild:
        assert sequences["k0"] == list(range(12)), sequences["k0"]
        assert second.stats.parked >= 4
    else:
        assert sequences["k0"] != list(range(12)), "control: without the ledger k0:8.. overtake"


class _RecordingRunner(StageRunner):
    """Notes each assignment it gets (eager range: the whole assignment every time)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.assignments: list[set[tuple[str, int]]] = []

    def _batch(self, *args: Any) -> TransactionBatch:
        batch = super()._batch(*args)
        on_assign = batch.on_assign

        def recording(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            self.assignments.append({(tp.topic, tp.partition) for tp in partitions})
            on_assign(consumer, partitions)

        batch.on_assign = recording  # type: ignore[method-assign]
        return batch


def test_two_workers_each_own_an_input_partition_with_its_retry_partitions(
    cluster: Cluster, pipeline_topics: PipelineTopics
) -> None:
    name = f"kord2w{uuid.uuid4().hex[:6]}"
    pipeline, source, sink, _attempts, _done = _stage(
        name, key_ordered=True, tiers=(1.0,), fails={"k1:3": 1, "k2:2": 1, "k5:6": 1}
    )
    pipeline_topics(pipeline)
    _produce(cluster, source, _interleaved(keys=6, per_key=15))
    retry_topic = pipeline.get("copy").retry_topics[0]
    runners = [
        _RecordingRunner(
            pipeline.get("copy"),
            slot=slot,
            kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers),
            settings=StageSettings(stats_interval_s=60, session_timeout_ms=6000),
        )
        for slot in (0, 1)
    ]
    threads = [threading.Thread(target=r.run, kwargs={"idle_timeout_s": 10}) for r in runners]
    threads[0].start()
    # the second joins once the first has partitions and works: a rebalance mid-stream
    deadline = time.monotonic() + 60
    while not (runners[0].assignments and runners[0].stats.consumed) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    threads[1].start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)

    for runner in runners:
        assert runner.assignments, "each worker got partitions"
        for assignment in runner.assignments:
            inputs = {p for topic, p in assignment if topic == source}
            retries = {p for topic, p in assignment if topic == retry_topic}
            assert inputs == retries, f"input and retry partitions apart: {assignment}"
    assert any(len(r.assignments[-1]) == 2 for r in runners), "the two workers shared the work"

    output = _read(cluster, sink)
    values = Counter(m.value().decode() for m in output)
    assert set(values) == {f"k{k}:{i}" for k in range(6) for i in range(15)}
    assert max(values.values()) == 1
    sequences = _sequences(output)
    assert all(seq == sorted(seq) for seq in sequences.values()), sequences


def test_key_order_and_exactly_once_hold_when_every_third_transaction_aborts(
    cluster: Cluster, pipeline_topics: PipelineTopics
) -> None:
    name = f"kordab{uuid.uuid4().hex[:6]}"
    fails = {f"k{k}:{i}": 2 for k in range(6) for i in range(15) if (k + i) % 7 == 0}
    pipeline, source, sink, _attempts, _done = _stage(
        name, key_ordered=True, tiers=(0.3, 0.6), fails=fails
    )
    pipeline_topics(pipeline)
    _produce(cluster, source, _interleaved(keys=6, per_key=15))
    runner = AbortEveryThirdRunner(
        pipeline.get("copy"),
        kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers),
        # small transactions: many of them abort while records of a key are parked
        settings=StageSettings(stats_interval_s=60, batch_max_records=20),
    )
    runner.run(idle_timeout_s=6)
    assert runner.stats.transactions_aborted >= 5
    assert runner.stats.rewinds >= 5

    output = _read(cluster, sink)
    values = Counter(m.value().decode() for m in output)
    assert set(values) == {f"k{k}:{i}" for k in range(6) for i in range(15)}
    assert max(values.values()) == 1, "duplicates after aborts"
    sequences = _sequences(output)
    assert all(seq == sorted(seq) for seq in sequences.values()), sequences
    assert not _read(cluster, pipeline.get("copy").dlq_topic)
    committed_parked = [
        m
        for topic in pipeline.get("copy").retry_topics
        for m in _read(cluster, topic)
        if h.get(message_headers(m), h.PARKED_BEHIND) is not None
    ]
    assert committed_parked, "records were parked in committed transactions"
