"""Exactly-once under faults, on the real broker: kills, rebalances, fencing, aborts, SIGTERM.

Each test writes numbered records, runs the copy stage in worker processes while injecting a
fault, then reads the output with a fresh read_committed consumer and checks that every input
is there exactly once, in per-key order (keys map to partitions, so this is partition order).
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.integration.conftest import Cluster, PipelineTopics, TopicFactory
from tests.integration.eos import (
    check_exactly_once,
    open_transaction,
    produce_numbered,
    read_committed,
    start_worker,
)
from tests.integration.pipelines import build_copy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 4


def _env(cluster: Cluster, source: str, sink: str, **extra: str) -> dict[str, str]:
    return {
        "TEST_PIPELINE": f"faults{uuid.uuid4().hex[:8]}",
        "TEST_INPUT": source,
        "TEST_OUTPUT": sink,
        "STREAMS_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
        # the broker's minimum: a killed worker's partitions move within about 6 s
        "STREAMS_STAGE_SESSION_TIMEOUT_MS": "6000",
        "STREAMS_STAGE_STATS_INTERVAL_S": "5",
        **extra,
    }


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


def _wait_for(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 60) -> int:
    if process.poll() is None:
        process.send_signal(sig)
    return process.wait(timeout=timeout)


def test_exactly_once_while_the_worker_is_sigkilled_mid_batch(
    cluster: Cluster,
    topic_factory: TopicFactory,
    tmp_path: Path,
    pipeline_topics: PipelineTopics,
) -> None:
    count, kills = 20_000, 6
    source = topic_factory("in", partitions=PARTITIONS)
    sink = topic_factory("out", partitions=PARTITIONS)
    produce_numbered(cluster, source, count)
    # long transactions (1 s) and a slowed handler: each kill lands inside an open transaction
    env = _env(
        cluster,
        source,
        sink,
        TEST_DELAY_MS="0.25",
        STREAMS_STAGE_BATCH_MAX_MS="1000",
        STREAMS_STAGE_BATCH_MAX_RECORDS="5000",
    )
    pipeline_topics(build_copy(env["TEST_PIPELINE"], source, sink))
    group = f"{env['TEST_PIPELINE']}.copy"
    log = tmp_path / "workers.log"
    done_kills = 0
    while done_kills < kills:
        before = _committed(cluster, group, source)
        worker = start_worker(env, "copy", 0, log=log)
        # progress since this start: at least 1,000 more records committed
        _wait_for(
            lambda before=before, worker=worker: (
                _committed(cluster, group, source) >= before + 1000 or worker.poll() is not None
            ),
            120,
            "progress before the kill",
        )
        assert worker.poll() is None, log.read_text()[-2000:]
        # into an open transaction: its records are in the output's log, not yet committed
        _wait_for(
            lambda: open_transaction(cluster.client_config(), sink, PARTITIONS),
            30,
            "an open transaction",
        )
        assert _stop(worker, signal.SIGKILL) == -signal.SIGKILL
        done_kills += 1
        if _committed(cluster, group, source) >= count - 1000:
            break
    assert done_kills == kills, "the stage finished before enough kills; slow it down"
    worker = start_worker(env, "copy", 0, log=log)
    _wait_for(lambda: _committed(cluster, group, source) >= count, 180, "the stage to finish")
    assert _stop(worker) == 0, log.read_text()[-2000:]
    result = read_committed(cluster, sink, PARTITIONS, expect=count)
    check_exactly_once(result, count)
    # the kills really cut open transactions: aborted records sit in the log
    assert _high_watermarks(cluster, sink) > count


def _high_watermarks(cluster: Cluster, topic: str) -> int:
    consumer = Consumer(
        cluster.client_config(**{"group.id": "hw", "isolation.level": "read_uncommitted"})
    )
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)
        )
    finally:
        consumer.close()


def test_scaling_one_to_three_to_one_worker_loses_and_duplicates_nothing(
    cluster: Cluster,
    topic_factory: TopicFactory,
    tmp_path: Path,
    pipeline_topics: PipelineTopics,
) -> None:
    count = 12_000
    source = topic_factory("in", partitions=PARTITIONS)
    sink = topic_factory("out", partitions=PARTITIONS)
    produce_numbered(cluster, source, count)
    env = _env(cluster, source, sink, TEST_DELAY_MS="0.5")
    pipeline_topics(build_copy(env["TEST_PIPELINE"], source, sink))
    group = f"{env['TEST_PIPELINE']}.copy"
    log = tmp_path / "workers.log"
    first = start_worker(env, "copy", 0, log=log)
    _wait_for(lambda: _committed(cluster, group, source) >= 1500, 120, "first progress")
    extra = [start_worker(env, "copy", slot, log=log) for slot in (1, 2)]
    mark = _committed(cluster, group, source)
    _wait_for(lambda: _committed(cluster, group, source) >= mark + 3000, 120, "progress at 3")
    for worker in extra:
        assert _stop(worker) == 0, log.read_text()[-2000:]
    _wait_for(lambda: _committed(cluster, group, source) >= count, 180, "the stage to finish")
    assert _stop(first) == 0
    check_exactly_once(read_committed(cluster, sink, PARTITIONS, expect=count), count)
    text = log.read_text()
    assert "partitions revoked" in text  # the rebalances really happened


def test_a_second_worker_on_the_same_slot_fences_the_first(
    cluster: Cluster,
    topic_factory: TopicFactory,
    tmp_path: Path,
    pipeline_topics: PipelineTopics,
) -> None:
    count = 8000
    source = topic_factory("in", partitions=PARTITIONS)
    sink = topic_factory("out", partitions=PARTITIONS)
    produce_numbered(cluster, source, count)
    env = _env(cluster, source, sink, TEST_DELAY_MS="0.5")
    pipeline_topics(build_copy(env["TEST_PIPELINE"], source, sink))
    group = f"{env['TEST_PIPELINE']}.copy"
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = start_worker(env, "copy", 0, log=first_log)
    _wait_for(lambda: _committed(cluster, group, source) >= 1000, 120, "first progress")
    # same slot, same transactional.id; --take-over: without it the second refuses to start
    second = start_worker(env, "copy", 0, log=second_log, extra=("--take-over",))
    assert first.wait(timeout=120) == 4, first_log.read_text()[-3000:]
    assert "fenced by another worker" in first_log.read_text()
    _wait_for(lambda: _committed(cluster, group, source) >= count, 180, "the stage to finish")
    assert _stop(second) == 0
    check_exactly_once(read_committed(cluster, sink, PARTITIONS, expect=count), count)


def test_sigterm_drains_commits_and_exits_0_then_restart_finishes(
    cluster: Cluster,
    topic_factory: TopicFactory,
    tmp_path: Path,
    pipeline_topics: PipelineTopics,
) -> None:
    count = 8000
    source = topic_factory("in", partitions=PARTITIONS)
    sink = topic_factory("out", partitions=PARTITIONS)
    produce_numbered(cluster, source, count)
    env = _env(cluster, source, sink, TEST_DELAY_MS="0.5", STREAMS_STAGE_BATCH_MAX_MS="1000")
    pipeline_topics(build_copy(env["TEST_PIPELINE"], source, sink))
    group = f"{env['TEST_PIPELINE']}.copy"
    log = tmp_path / "worker.log"
    worker = start_worker(env, "copy", 0, log=log)
    _wait_for(lambda: _committed(cluster, group, source) >= 2000, 120, "progress")
    began = time.monotonic()
    assert _stop(worker) == 0, log.read_text()[-2000:]
    assert time.monotonic() - began < 30
    stopped_at = _committed(cluster, group, source)
    assert 2000 <= stopped_at < count
    assert "stopped cleanly" in log.read_text()
    # what was committed at the stop is exactly what the output holds
    partial = read_committed(cluster, sink, PARTITIONS, expect=stopped_at, timeout_s=30)
    assert len(partial.values) == stopped_at
    worker = start_worker(env, "copy", 0, log=log)
    _wait_for(lambda: _committed(cluster, group, source) >= count, 180, "the stage to finish")
    assert _stop(worker) == 0
    check_exactly_once(read_committed(cluster, sink, PARTITIONS, expect=count), count)


def test_kills_while_routing_to_retry_and_dlq_lose_and_duplicate_nothing(
    cluster: Cluster,
    topic_factory: TopicFactory,
    tmp_path: Path,
    pipeline_topics: PipelineTopics,
) -> None:
    count, kills = 10_000, 4
    source = topic_factory("in", partitions=PARTITIONS)
    sink = topic_factory("out", partitions=PARTITIONS)
    produce_numbered(cluster, source, count)
    env = _env(
        cluster,
        source,
        sink,
        TEST_DELAY_MS="0.3",
        TEST_FAILURES="1",
        STREAMS_STAGE_BATCH_MAX_MS="1000",
    )
    pipeline = build_copy(env["TEST_PIPELINE"], source, sink)
    pipeline_topics(pipeline)
    spec = pipeline.get("copy")
    group = spec.group_id
    log = tmp_path / "workers.log"
    for _ in range(kills):
        before = _committed(cluster, group, source)
        worker = start_worker(env, "copy", 0, log=log)
        _wait_for(
            lambda before=before, worker=worker: (
                _committed(cluster, group, source) >= before + 1000 or worker.poll() is not None
            ),
            120,
            "progress before the kill",
        )
        assert worker.poll() is None, log.read_text()[-2000:]
        _wait_for(
            lambda: open_transaction(cluster.client_config(), sink, PARTITIONS),
            30,
            "an open transaction",
        )
        assert _stop(worker, signal.SIGKILL) == -signal.SIGKILL
    worker = start_worker(env, "copy", 0, log=log)
    expected_dead = {n for n in range(count) if n % 100 == 42}
    expected_out = set(range(count)) - expected_dead

    def outputs_complete() -> bool:
        return len(read_committed(cluster, sink, PARTITIONS, expect=0, timeout_s=5).values) >= len(
            expected_out
        )

    _wait_for(outputs_complete, 180, "every record through the retry path")
    assert _stop(worker) == 0, log.read_text()[-2000:]
    out = read_committed(cluster, sink, PARTITIONS, expect=len(expected_out)).values
    dead = read_committed(cluster, spec.dlq_topic, PARTITIONS, expect=len(expected_dead)).values
    retried = read_committed(cluster, spec.retry_topics[0], PARTITIONS, expect=0).values
    assert len(out) == len(set(out)), "duplicate outputs"
    assert len(dead) == len(set(dead)), "duplicate dead letters"
    assert set(out) == expected_out
    assert set(dead) == expected_dead
    transient = {n for n in expected_out if n % 10 == 3}
    assert sorted(retried) == sorted(transient), "each transient failure routed exactly once"


def test_an_output_to_an_undeclared_topic_stops_the_worker_with_exit_5_and_dead_letters_nothing(
    cluster: Cluster,
    topic_factory: TopicFactory,
    tmp_path: Path,
    pipeline_topics: PipelineTopics,
) -> None:
    """A topic typo in a handler is the stage's bug: before the fix every such record went to
    the DLQ as a handler failure and the stage ran on."""
    source = topic_factory("in", partitions=PARTITIONS)
    sink = topic_factory("out", partitions=PARTITIONS)
    produce_numbered(cluster, source, 50)
    env = _env(cluster, source, sink, TEST_OUTPUT_TYPO="1")
    pipeline = build_copy(env["TEST_PIPELINE"], source, sink)
    pipeline_topics(pipeline)
    log = tmp_path / "worker.log"
    worker = start_worker(env, "copy", 0, log=log)

    code = worker.wait(timeout=120)

    text = log.read_text()
    assert code == 5, text[-2000:]
    assert f"topic '{source}.typo', which the stage does not declare" in text
    assert 'hint="add the topic to outputs=' in text
    dead = read_committed(cluster, pipeline.get("copy").dlq_topic, 1, expect=0, timeout_s=5)
    assert dead.values == [], "no record may be dead-lettered for the stage's own bug"
