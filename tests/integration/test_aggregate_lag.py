"""`streams lag --pipeline` on an aggregate: its changelog topic and the state its worker reports.

A subprocess against the real broker, reading the command's ``--json``: the running-sum
aggregate's stage lists ``P.S.changelog`` as its state topic and the keys its worker holds
(from the worker's stats on the stats topic); a plain stage lists none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from streams.config import KafkaSettings
from streams.topics import ensure_topics
from tests.chaos.aggregate_pipeline import RUNNING_STAGE, build_running, topics
from tests.integration.conftest import Cluster
from tests.integration.eos import ROOT
from tests.integration.test_stage_faults import _stop

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEYS = 12
REFERENCE = "tests.chaos.aggregate_pipeline:running"


def _lag(env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli.main", "lag", "--pipeline", REFERENCE, "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode in {0, 3}, done.stderr.decode()[-2000:]  # 3: a stage not OK
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def test_streams_lag_shows_an_aggregates_changelog_and_the_keys_its_worker_holds(
    cluster: Cluster, tmp_path: Path
) -> None:
    name = f"agglag{uuid.uuid4().hex[:6]}"
    pipeline = build_running(name)
    spec = pipeline.component(RUNNING_STAGE)
    ensure_topics(pipeline, kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers))
    producer = Producer(cluster.client_config())
    for n in range(600):
        producer.produce(topics(name)[0], str(n).encode(), key=f"k{n % KEYS}".encode())
    assert producer.flush(30) == 0
    env = {
        **os.environ,
        "CHAOS_NAME": name,
        "STREAMS_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
        "STREAMS_STATE_DIR": str(tmp_path / "state"),
        "STREAMS_STAGE_STATS_INTERVAL_S": "1",
        "STREAMS_STATE_STORE": "memory",  # an exact key count (RocksDB's is an estimate)
    }
    log = tmp_path / "worker.log"
    with log.open("ab") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "streams.runtime.worker", REFERENCE, "--stage", RUNNING_STAGE],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        stage: dict[str, Any] = {}
        while time.monotonic() < deadline:
            view = _lag(env)
            stage = next(s for s in view["stages"] if s["group"] == spec.group_id)
            if stage["state"] is not None and stage["state"]["keys"] == KEYS:
                break
            time.sleep(1)
    finally:
        _stop(worker)
    assert stage["state_topics"] == [f"{spec.group_id}.changelog"]
    assert stage["state"] == {"keys": KEYS, "restoring": False, "restored": 0, "to_restore": 0}, (
        stage,
        log.read_text()[-2000:],
    )
