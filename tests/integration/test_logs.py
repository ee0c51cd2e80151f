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
