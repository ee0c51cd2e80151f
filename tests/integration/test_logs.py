"""Logs that stay readable: what an operator sees when many records fail or the broker is gone.

Checked the way an operator meets them: the output of real processes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import Cluster, PipelineTopics, TopicFactory
from tests.integration.eos import produce_numbered, start_worker
from tests.integration.pipelines import build_copy
from tests.integration.test_stage_faults import _committed, _env, _stop, _wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STREAMS = str(Path(sys.executable).with_name("streams"))
# librdkafka's own stderr format: %<level>|<timestamp>|<facility>|<client>| ...
_RDKAFKA_LINE = re.compile(r"^%\d\|")


def test_a_thousand_dead_letters_make_a_few_summary_lines_not_a_thousand(
    cluster: Cluster, topic_factory: TopicFactory, pipeline_topics: PipelineTopics, tmp_path: Path
) -> None:
    count = 1000
    source = topic_factory("in", partitions=4)
    sink = topic_factory("out", partitions=4)
    produce_numbered(cluster, source, count)
    env = _env(cluster, source, sink, TEST_DEAD_EVERY="1")
    pipeline_topics(build_copy(env["TEST_PIPELINE"], source, sink))
    log = tmp_path / "worker.log"
    worker = start_worker(env, "copy", 0, log=log)
    group = f"{env['TEST_PIPELINE']}.copy"
    _wait_for(lambda: _committed(cluster, group, source) >= count, 120, "all records")
    assert _stop(worker) == 0

    lines = log.read_text().splitlines()
    summaries = [line for line in lines if "dead-lettered" in line]
    counted = sum(
        int(m.group(1)) for line in summaries if (m := re.search(r"lettered (\d+)", line))
    )
    assert counted == count, summaries
    # a handful of summary lines (one per 5 s at most), not one per record
    assert 1 <= len(summaries) <= 5, summaries
    assert len(lines) <= 40, f"{len(lines)} lines:\n" + "\n".join(lines[:60])
    assert not [line for line in lines if "record dead-lettered" in line]


def test_a_one_shot_command_with_the_broker_down_prints_two_lines_and_no_librdkafka(
    tmp_path: Path,
) -> None:
    """Before: 584 lines of librdkafka's 'Connection refused' and 31 s; now the error, the hint."""
    done = subprocess.run(
        [STREAMS, "topics", "create", "streams.examples.hello:pipeline"],
        cwd=tmp_path,
        env={**os.environ, "STREAMS_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        (
            "error: cannot reach Kafka at 127.0.0.1:1 (no answer in 10 s: Failed to get "
            "metadata: Local: Broker transport failure)"
        ),
        (
            "hint: check that the broker runs and that STREAMS_BOOTSTRAP_SERVERS is right "
            "(`streams local status` for the local stack)"
        ),
    ]
    assert not [line for line in done.stderr.splitlines() if _RDKAFKA_LINE.match(line)]


# A worker's stats publisher, alone in a process: publishes one snapshot and waits for its fate.
_PUBLISH_ONCE = """
import sys
from streams.runtime.logs import configure_logging
from streams.runtime.publish import StatsPublisher
configure_logging("text")
publisher = StatsPublisher(reference="shop:pipeline", topic=sys.argv[1])
snapshot = {"group": "shop.accept", "slot": 0}
publisher.publish(snapshot)
publisher._producer.flush(30)  # until the record is delivered or its delivery fails
publisher.publish(snapshot)  # the next snapshot reports how the last one failed
publisher.close()
"""


def _publish_once(topic: str, **env: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PUBLISH_ONCE, topic],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [line[9:] for line in done.stderr.splitlines() if "streams.stats" in line]


def test_the_stats_warning_names_the_missing_topic_and_how_to_create_it(cluster: Cluster) -> None:
    topic = f"_streams.stats.missing{os.getpid()}"

    assert _publish_once(topic) == [
        (
            f"WARNING streams.stats: cannot publish worker stats to {topic}: topic {topic} "
            f"does not exist at {cluster.bootstrap_servers} (monitoring misses this worker "
            'meanwhile) hint="create it: streams topics create shop:pipeline"'
        )
    ]


def test_the_stats_warning_with_the_broker_down_says_so_not_to_create_topics() -> None:
    """Regression: a broker that was merely down got the hint `run streams topics create`."""
    lines = _publish_once("_streams.stats", STREAMS_BOOTSTRAP_SERVERS="127.0.0.1:1")

    assert lines == [
        (
            "WARNING streams.stats: cannot publish worker stats to _streams.stats: no answer "
            "from Kafka at 127.0.0.1:1 (Local: Message timed out) (monitoring misses this "
            'worker meanwhile) hint="check that the broker runs and that '
            "STREAMS_BOOTSTRAP_SERVERS is right (`streams local status` for the local stack); "
            'publishing resumes when the broker answers"'
        )
    ]
