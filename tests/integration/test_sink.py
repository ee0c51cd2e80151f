"""The SQL sink against the real broker: SIGKILLed workers, SQLite and PostgreSQL, DB offsets win.

Exactly once is checked on a table without a unique key, so a record written twice would show
up as a second row; and the offsets stored in the database must equal the topic's end offsets.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.config import KafkaSettings, StageSettings
from streams.sinks import Database, SinkRunner, SinkSettings, read_offsets
from tests.integration import postgres
from tests.integration.conftest import Cluster, TopicFactory
from tests.integration.eos import ROOT, produce_numbered
from tests.integration.sink_pipelines import sink

pytestmark = pytest.mark.integration

postgres_url = postgres.postgres_url  # the session fixture, visible to this module

COUNT = 5000
PARTITIONS = 3
KILL_AT_ROWS = (900, 2100, 3300)  # rows committed before each SIGKILL: early, middle, late


def count_rows(url: str) -> int:
    with Database(url).connect() as db:
        try:
            return int(db.execute("SELECT count(*) FROM sink_numbers").rows[0][0])
        except Exception:  # noqa: BLE001 - the table does not exist before the first start
            return 0


def rows_at_least(url: str, count: int) -> bool:
    return count_rows(url) >= count


def numbers(url: str) -> Counter[int]:
    with Database(url).connect() as db:
        return Counter(int(n) for (n,) in db.execute("SELECT n FROM sink_numbers").rows)


def stored_offsets(url: str, group_id: str) -> dict[tuple[str, int], int]:
    with Database(url).connect() as db:
        return read_offsets(db, group_id)


def end_offsets(cluster: Cluster, topic: str) -> dict[tuple[str, int], int]:
    consumer = Consumer(cluster.client_config(**{"group.id": f"probe-{uuid.uuid4().hex}"}))
    try:
        return {
            (topic, p): consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)
        }
    finally:
        consumer.close()


def kafka_offsets(cluster: Cluster, topic: str, group_id: str) -> dict[tuple[str, int], int]:
    consumer = Consumer(cluster.client_config(**{"group.id": group_id}))
    try:
        listed = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(listed, 10)}
    finally:
        consumer.close()


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; worker log:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def run_killed_three_times(cluster: Cluster, topic: str, url: str, tmp_path: Path) -> None:
    """SIGKILL the sink worker at three points, restart it, and let the last one finish."""
    name = f"n{uuid.uuid4().hex[:8]}"
    group_id = f"sinktest.{name}"
    env = {
        **os.environ,
        "SINK_TEST_TOPIC": topic,
        "SINK_TEST_NAME": name,
        "SINK_TEST_DELAY_MS": "0.4",  # about 2 s of handler time: each kill lands mid-batch
        "STREAMS_SINK_DATABASE_URL": url,
        "STREAMS_STAGE_BATCH_MAX_RECORDS": "250",
        # static membership: a restarted worker takes its partitions back at once instead of
        # waiting for the killed one's session to time out
        "STREAMS_KAFKA_EXTRA": json.dumps({"group.instance.id": f"{group_id}.0"}),
    }
    log = tmp_path / "worker.log"
    end = end_offsets(cluster, topic)

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "tests.integration.sink_pipelines"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    for threshold in KILL_AT_ROWS:
        worker = start()
        try:
            wait_until(partial(rows_at_least, url, threshold), 30, f"{threshold} rows", log)
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
        assert count_rows(url) < COUNT, "the worker finished before it was killed"
    worker = start()
    try:
        wait_until(lambda: stored_offsets(url, group_id) == end, 30, "the end offsets", log)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)

    seen = numbers(url)
    assert sum(seen.values()) == COUNT, f"{sum(seen.values()) - COUNT} rows too many"
    assert sorted(seen) == list(range(COUNT))
    assert stored_offsets(url, group_id) == end
    assert kafka_offsets(cluster, topic, group_id) == end  # the advisory copy caught up too
    assert log.read_text().count("partitions assigned") >= len(KILL_AT_ROWS) + 1


def test_sqlite_sink_survives_sigkill_exactly_once(
    cluster: Cluster, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    topic = topic_factory("numbers", partitions=PARTITIONS)
    produce_numbered(cluster, topic, COUNT, keys=50)

    run_killed_three_times(cluster, topic, f"sqlite:///{tmp_path}/sink.db", tmp_path)


def test_postgres_sink_survives_sigkill_exactly_once(
    cluster: Cluster, topic_factory: TopicFactory, tmp_path: Path, postgres_url: str
) -> None:
    topic = topic_factory("numbers", partitions=PARTITIONS)
    produce_numbered(cluster, topic, COUNT, keys=50)

    run_killed_three_times(cluster, topic, postgres.create_database(postgres_url), tmp_path)


def test_restart_resumes_from_database_offsets_when_kafkas_are_behind(
    cluster: Cluster, topic_factory: TopicFactory, admin: AdminClient, tmp_path: Path
) -> None:
    topic = topic_factory("numbers", partitions=PARTITIONS)
    url = f"sqlite:///{tmp_path}/sink.db"
    spec = replace(sink, name=f"r{uuid.uuid4().hex[:8]}", inputs=(topic,), database=url)

    def runner() -> SinkRunner:
        return SinkRunner(
            spec,
            kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers),
            settings=StageSettings(batch_max_records=200),
            sink_settings=SinkSettings(database_url=None),
        )

    produce_numbered(cluster, topic, 1000)
    first = runner()
    first.run(max_records=1000, idle_timeout_s=30)
    assert kafka_offsets(cluster, topic, spec.group_id) == end_offsets(cluster, topic)

    produce_numbered(cluster, topic, 500)  # values 0..499 again: keep them apart by offset
    futures = admin.alter_consumer_group_offsets(
        [
            ConsumerGroupTopicPartitions(
                spec.group_id, [TopicPartition(topic, p, 0) for p in range(PARTITIONS)]
            )
        ]
    )
    for future in futures.values():
        future.result(timeout=30)
    assert set(kafka_offsets(cluster, topic, spec.group_id).values()) == {0}

    second = runner()
    second.run(max_records=500, idle_timeout_s=30)

    assert second.stats.consumed == 500  # only the new records: started at the DB offsets
    with Database(url).connect() as db:
        origins = Counter(o for (o,) in db.execute("SELECT origin FROM sink_numbers").rows)
    assert sum(origins.values()) == 1500
    assert max(origins.values()) == 1
    assert stored_offsets(url, spec.group_id) == end_offsets(cluster, topic)


def run_two_workers_with_a_zombie(
    cluster: Cluster, topic: str, url: str, tmp_path: Path
) -> tuple[str, str]:
    """Two sink workers without static membership: real rebalances; one is SIGSTOPped.

    Worker A starts, B joins while A works (a cooperative rebalance: A commits what it holds
    before its partitions move), A is SIGSTOPped past the session timeout, so that its
    partitions move to B, and (PostgreSQL) B commits on them; then A wakes up, a zombie with a
    batch in hand. Returns both logs.
    """
    name = f"z{uuid.uuid4().hex[:8]}"
    group_id = f"sinktest.{name}"
    env = {
        **os.environ,
        "SINK_TEST_TOPIC": topic,
        "SINK_TEST_NAME": name,
        "SINK_TEST_DELAY_MS": "1",
        "STREAMS_SINK_DATABASE_URL": url,
        "STREAMS_STAGE_BATCH_MAX_RECORDS": "200",
        "STREAMS_STAGE_SESSION_TIMEOUT_MS": "6000",  # the broker's minimum
    }
    logs = {w: tmp_path / f"worker-{w}.log" for w in "ab"}
    end = end_offsets(cluster, topic)

    def start(which: str) -> subprocess.Popen[bytes]:
        with logs[which].open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "tests.integration.sink_pipelines"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    a = start("a")
    b: subprocess.Popen[bytes] | None = None
    try:
        wait_until(partial(rows_at_least, url, 600), 60, "A's first rows", logs["a"])
        b = start("b")
        wait_until(
            lambda: "partitions assigned" in logs["b"].read_text(), 60, "B's join", logs["b"]
        )
        wait_until(partial(rows_at_least, url, 1800), 60, "both working", logs["b"])
        assigned = logs["b"].read_text().count("partitions assigned")
        a.send_signal(signal.SIGSTOP)
        stopped_at = count_rows(url)
        # past the session timeout: A's partitions move to B
        wait_until(
            lambda: logs["b"].read_text().count("partitions assigned") > assigned,
            60,
            "B taking over A's partitions",
            logs["b"],
        )
        if not url.startswith("sqlite"):
            # and B commits rows on them. (Not with SQLite: the stopped A holds the database's
            # one write lock in its open batch, so B waits until A wakes up.)
            wait_until(partial(rows_at_least, url, stopped_at + 600), 60, "B alone", logs["b"])
        time.sleep(2)
        a.send_signal(signal.SIGCONT)
        wait_until(lambda: stored_offsets(url, group_id) == end, 120, "the end offsets", logs["b"])
        both = {"a": a, "b": b}
        for worker in both.values():
            worker.send_signal(signal.SIGTERM)
        for which, worker in both.items():
            assert worker.wait(60) == 0, logs[which].read_text()[-3000:]
    finally:
        for running in (a, b):
            if running is not None and running.poll() is None:
                running.send_signal(signal.SIGCONT)
                running.kill()
                running.wait(10)
    seen = numbers(url)
    assert sum(seen.values()) == COUNT, f"{sum(seen.values()) - COUNT} rows too many"
    assert sorted(seen) == list(range(COUNT))
    assert stored_offsets(url, group_id) == end
    return logs["a"].read_text(), logs["b"].read_text()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_two_sink_workers_rebalance_for_real_and_a_zombie_writes_nothing(
    cluster: Cluster,
    topic_factory: TopicFactory,
    tmp_path: Path,
    database: str,
    request: pytest.FixtureRequest,
) -> None:
    topic = topic_factory("numbers", partitions=PARTITIONS)
    produce_numbered(cluster, topic, COUNT, keys=50)
    url = (
        f"sqlite:///{tmp_path}/sink.db"
        if database == "sqlite"
        else postgres.create_database(request.getfixturevalue("postgres_url"))
    )

    log_a, log_b = run_two_workers_with_a_zombie(cluster, topic, url, tmp_path)

    assert "partitions revoked" in log_a, "B's join revoked some of A's partitions (commit first)"
    # the zombie's batch was refused: its partitions were lost, or its offsets had moved
    assert "partitions lost" in log_a or "another worker moved the offsets" in log_a, log_a[-3000:]
    assert log_b.count("partitions assigned") >= 2, "B got partitions at its join and at A's loss"


def test_an_idle_sink_stores_its_position_past_the_last_transaction_marker(
    cluster: Cluster, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    """A transaction aborted after the sink's last batch (a stage's worker killed and
    restarted, say) leaves aborted records and an abort marker and nothing to read. A sink that
    stored only offsets after records it processed would stay behind them for ever (lag in
    every lag view; a chaos run waiting for lag 0 waited in vain)."""
    from confluent_kafka import Producer  # noqa: PLC0415

    topic = topic_factory("numbers", partitions=PARTITIONS)
    url = f"sqlite:///{tmp_path}/sink.db"
    spec = replace(sink, name=f"m{uuid.uuid4().hex[:8]}", inputs=(topic,), database=url)
    producer = Producer(
        cluster.client_config(**{"transactional.id": f"markers-{uuid.uuid4().hex[:8]}"})
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for n in range(30):
        producer.produce(topic, str(n).encode(), partition=n % PARTITIONS)
    producer.commit_transaction(30)

    def run() -> None:
        SinkRunner(
            spec,
            kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers),
            settings=StageSettings(batch_max_records=200),
            sink_settings=SinkSettings(database_url=None),
        ).run(idle_timeout_s=8)

    run()
    before = stored_offsets(url, spec.group_id)
    assert before == end_offsets(cluster, topic)
    producer.begin_transaction()
    for p in range(PARTITIONS):
        producer.produce(topic, b"999", partition=p)  # aborted: never read by the sink
    producer.flush(30)  # written first: an abort drops what was not sent yet
    producer.abort_transaction(30)
    # one aborted record and its marker each (the coordinator writes markers after the abort)
    deadline = time.monotonic() + 15
    end = end_offsets(cluster, topic)
    while any(o < before[tp] + 2 for tp, o in end.items()):
        assert time.monotonic() < deadline, f"markers not written: {end} after {before}"
        time.sleep(0.2)
        end = end_offsets(cluster, topic)

    run()  # nothing to read: only the aborted records and the markers

    assert sorted(numbers(url)) == list(range(30))
    assert stored_offsets(url, spec.group_id) == end
    assert kafka_offsets(cluster, topic, spec.group_id) == end
