"""Each recovery path of the README's failure table, driven by a real fault (no test hooks).

Worker processes run the copy stage (tests/integration/pipelines.py) over numbered records;
the faults are signals to the worker (SIGSTOP past a timeout, a second SIGTERM) and topics as
a real cluster could have them. After each, a fresh read_committed reader must find every input
exactly once, and the worker's log must show the recovery the table promises.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from streams.codecs import raw
from streams.config import KafkaSettings
from streams.exceptions import TopologyError
from streams.pipeline import Pipeline
from streams.record import Record
from streams.retry import RetryPolicy
from streams.stage import StageRunner
from tests.integration.conftest import Cluster, PipelineTopics, TopicFactory
from tests.integration.eos import check_exactly_once, produce_numbered, read_committed, start_worker
from tests.integration.pipelines import build_copy
from tests.integration.test_stage_faults import _committed, _env, _stop, _wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 4


def _setup(
    cluster: Cluster,
    topic_factory: TopicFactory,
    pipeline_topics: PipelineTopics,
    count: int,
    **extra: str,
) -> tuple[dict[str, str], str, str, str]:
    source = topic_factory("in", partitions=PARTITIONS)
    sink = topic_factory("out", partitions=PARTITIONS)
    produce_numbered(cluster, source, count)
    env = _env(cluster, source, sink, **extra)
    pipeline_topics(build_copy(env["TEST_PIPELINE"], source, sink))
    return env, source, sink, f"{env['TEST_PIPELINE']}.copy"


def _finish(
    cluster: Cluster,
    *,
    env: dict[str, str],
    group: str,
    source: str,
    sink: str,
    count: int,
    log: Path,
) -> None:
    """A fresh worker finishes the input; every input is in the output exactly once."""
    worker = start_worker(env, "copy", 0, log=log)
    _wait_for(lambda: _committed(cluster, group, source) >= count, 180, "the stage to finish")
    assert _stop(worker) == 0, log.read_text()[-2000:]
    check_exactly_once(read_committed(cluster, sink, PARTITIONS, expect=count), count)


def test_a_transaction_that_outlives_its_timeout_is_recovered_by_the_stage(
    cluster: Cluster, topic_factory: TopicFactory, pipeline_topics: PipelineTopics, tmp_path: Path
) -> None:
    """SIGSTOP past transaction.timeout.ms: the coordinator aborts the open transaction and
    bumps the producer's epoch. Woken, the worker's next transactional call fails, and the
    stage recovers (abort or a new producer, then rewind) instead of committing or stopping."""
    count = 6000
    env, source, sink, group = _setup(
        cluster,
        topic_factory,
        pipeline_topics,
        count,
        TEST_DELAY_MS="1",
        STREAMS_STAGE_BATCH_MAX_MS="3000",
        STREAMS_STAGE_TRANSACTION_TIMEOUT_MS="6000",
        # a long session: the partitions stay with the worker, only the transaction times out
        STREAMS_STAGE_SESSION_TIMEOUT_MS="45000",
    )
    log = tmp_path / "worker.log"
    worker = start_worker(env, "copy", 0, log=log)
    _wait_for(lambda: _committed(cluster, group, source) >= 500, 120, "progress")
    worker.send_signal(signal.SIGSTOP)
    time.sleep(15)  # past the timeout and the coordinator's 5 s sweep: it aborts the transaction
    worker.send_signal(signal.SIGCONT)
    _wait_for(
        lambda: "rewinding" in log.read_text() or "recreating" in log.read_text(),
        60,
        "the recovery",
    )
    assert worker.poll() is None, log.read_text()[-2000:]
    assert _stop(worker) == 0, log.read_text()[-2000:]
    text = log.read_text()
    assert "fenced by another worker" not in text, "no twin ran: the worker must not stop"
    _finish(cluster, env=env, group=group, source=source, sink=sink, count=count, log=log)


def test_a_twin_on_the_same_slot_stops_the_older_worker_with_exit_4(
    cluster: Cluster, topic_factory: TopicFactory, pipeline_topics: PipelineTopics, tmp_path: Path
) -> None:
    """Two processes started on slot 0 by mistake: the newer one's init_transactions fences
    the older; the older finds a member with a newer incarnation on its slot, stops with exit
    code 4 without committing, and the newer one finishes the input exactly once."""
    count = 6000
    # 3 ms a record (about 18 s of work): the older worker must still be writing when the newer
    # one fences it; an idle worker makes no transactional call, so it would never learn of it
    env, source, sink, group = _setup(
        cluster, topic_factory, pipeline_topics, count, TEST_DELAY_MS="3"
    )
    logs = [tmp_path / "older.log", tmp_path / "newer.log"]
    older = start_worker(env, "copy", 0, log=logs[0])
    _wait_for(lambda: _committed(cluster, group, source) >= 500, 120, "progress")
    # --take-over: started without it, the newer one refuses (streams.stage.twins)
    newer = start_worker(env, "copy", 0, log=logs[1], extra=("--take-over",))
    try:
        _wait_for(lambda: "stage started" in logs[1].read_text(), 60, "the newer worker")
        assert _committed(cluster, group, source) < count, "the older one finished: no overlap"
        assert older.wait(timeout=90) == 4, logs[0].read_text()[-3000:]
        older_log = logs[0].read_text()
        assert "fenced by another worker" in older_log
        assert "a newer worker runs this slot" in older_log
        _wait_for(lambda: _committed(cluster, group, source) >= count, 180, "the newer worker")
        assert newer.poll() is None, logs[1].read_text()[-3000:]
        assert "fenced by another worker" not in logs[1].read_text()
    finally:
        assert _stop(newer) == 0, logs[1].read_text()[-2000:]
    check_exactly_once(read_committed(cluster, sink, PARTITIONS, expect=count), count)


def test_partitions_lost_while_stopped_are_aborted_and_the_other_worker_takes_over(
    cluster: Cluster, topic_factory: TopicFactory, pipeline_topics: PipelineTopics, tmp_path: Path
) -> None:
    """SIGSTOP past the session timeout with a second worker running: the group gives the
    stopped worker's partitions away. Woken, it finds them lost (or its commit refused for an
    old generation) and aborts; nothing it held is committed twice."""
    count = 8000
    env, source, sink, group = _setup(
        cluster,
        topic_factory,
        pipeline_topics,
        count,
        TEST_DELAY_MS="1",
        STREAMS_STAGE_BATCH_MAX_MS="2000",
    )
    logs = [tmp_path / "worker-0.log", tmp_path / "worker-1.log"]
    first = start_worker(env, "copy", 0, log=logs[0])
    _wait_for(lambda: _committed(cluster, group, source) >= 500, 120, "progress")
    second = start_worker(env, "copy", 1, log=logs[1])
    _wait_for(lambda: "partitions assigned" in logs[1].read_text(), 60, "the second worker")
    time.sleep(1)
    assigned = logs[1].read_text().count("partitions assigned")
    first.send_signal(signal.SIGSTOP)
    _wait_for(
        lambda: logs[1].read_text().count("partitions assigned") > assigned,
        60,
        "the second worker taking over (session timeout)",
    )
    first.send_signal(signal.SIGCONT)
    _wait_for(
        lambda: (
            "partitions lost" in logs[0].read_text()
            or "transaction aborted, rewinding" in logs[0].read_text()
        ),
        60,
        "the stopped worker's recovery",
    )
    _wait_for(lambda: _committed(cluster, group, source) >= count, 180, "the stage to finish")
    for worker, log in ((first, logs[0]), (second, logs[1])):
        assert _stop(worker) == 0, log.read_text()[-2000:]
    check_exactly_once(read_committed(cluster, sink, PARTITIONS, expect=count), count)


def test_a_second_sigterm_aborts_the_batch_in_flight(
    cluster: Cluster, topic_factory: TopicFactory, pipeline_topics: PipelineTopics, tmp_path: Path
) -> None:
    count = 4000
    env, source, sink, group = _setup(
        cluster,
        topic_factory,
        pipeline_topics,
        count,
        # slow records in long batches: the drain after the first SIGTERM takes seconds
        TEST_DELAY_MS="20",
        STREAMS_STAGE_BATCH_MAX_MS="10000",
        STREAMS_STAGE_BATCH_MAX_RECORDS="400",
    )
    log = tmp_path / "worker.log"
    worker = start_worker(env, "copy", 0, log=log)
    _wait_for(lambda: _committed(cluster, group, source) >= 400, 120, "a first commit")
    worker.send_signal(signal.SIGTERM)
    _wait_for(lambda: "draining the batch in flight" in log.read_text(), 30, "the drain")
    committed_at_first_signal = _committed(cluster, group, source)
    worker.send_signal(signal.SIGTERM)
    code = worker.wait(timeout=60)

    text = log.read_text()
    assert code == 1, text[-2000:]  # aborted: restarted by a supervisor like a crash
    assert "second signal: aborting the open transaction" in text
    assert "stopped cleanly" not in text
    # the batch in flight was aborted, not committed
    assert _committed(cluster, group, source) == committed_at_first_signal
    _finish(cluster, env=env, group=group, source=source, sink=sink, count=count, log=log)


def test_missing_topics_stop_a_worker_with_exit_5_naming_them(
    cluster: Cluster, tmp_path: Path
) -> None:
    name = f"missing{uuid.uuid4().hex[:6]}"
    env = _env(cluster, f"{name}.in", f"{name}.out", TEST_PIPELINE=name)
    log = tmp_path / "worker.log"
    worker = start_worker(env, "copy", 0, log=log)

    code = worker.wait(timeout=90)

    text = log.read_text()
    assert code == 5, text[-2000:]
    assert f"missing topics {name}.in" in text
    assert f"{name}.copy.dlq" in text
    assert "streams topics create" in text


def test_key_ordered_stage_refuses_retry_topics_with_another_partition_count(
    cluster: Cluster, pipeline_topics: PipelineTopics
) -> None:
    name = f"kopc{uuid.uuid4().hex[:6]}"
    pipeline = Pipeline(name, partitions=4)
    pipeline.topic(f"{name}.copy.retry.1s", partitions=2)

    @pipeline.stage(
        "copy",
        inputs=[f"{name}.in"],
        outputs={f"{name}.out": raw()},
        retry=RetryPolicy(tiers=(1.0,), key_ordered=True),
    )
    def copy(record: Record[bytes]) -> bytes:
        return record.value

    pipeline_topics(pipeline)
    runner = StageRunner(
        pipeline.get("copy"), kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers)
    )
    with pytest.raises(TopologyError, match="same number of partitions") as raised:
        runner.run(idle_timeout_s=5)
    assert f"'{name}.copy.retry.1s': 2" in raised.value.message
    assert f"'{name}.in': 4" in raised.value.message


def test_a_stopped_worker_does_not_take_more_than_the_drain_deadline(
    cluster: Cluster, topic_factory: TopicFactory, pipeline_topics: PipelineTopics, tmp_path: Path
) -> None:
    """The shutdown deadline: a drain that cannot finish aborts after it (exit 1)."""
    count = 2000
    env, source, _sink, group = _setup(
        cluster,
        topic_factory,
        pipeline_topics,
        count,
        TEST_DELAY_MS="50",
        STREAMS_STAGE_BATCH_MAX_MS="60000",
        STREAMS_STAGE_BATCH_MAX_RECORDS="1000",
        STREAMS_STAGE_SHUTDOWN_DEADLINE_S="3",
    )
    log = tmp_path / "worker.log"
    worker = start_worker(env, "copy", 0, log=log)
    _wait_for(lambda: "partitions assigned" in log.read_text(), 60, "the assignment")
    time.sleep(2)  # inside the first (50 s long) batch
    worker.send_signal(signal.SIGTERM)
    try:
        code = worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        raise
    assert code == 1, log.read_text()[-2000:]
    assert "stop deadline passed" in log.read_text()
    assert _committed(cluster, group, source) == 0
