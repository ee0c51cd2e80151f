"""A worker's probes under real conditions: joining, a rebalance, a SIGSTOP."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from streams.localstack.process import free_port
from tests.integration.conftest import Cluster, PipelineTopics, TopicFactory
from tests.integration.eos import produce_numbered, start_worker
from tests.integration.pipelines import build_copy
from tests.integration.test_stage_faults import _env, _stop, _wait_for

pytestmark = pytest.mark.integration


def _status(port: int, path: str, timeout: float = 2.0) -> int | None:
    """The HTTP status of a probe; None when it does not answer within ``timeout``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            json.loads(r.read())
            return int(r.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, TimeoutError, ConnectionError):
        return None


def test_probes_follow_the_worker_through_a_rebalance_and_a_sigstop(
    cluster: Cluster, topic_factory: TopicFactory, pipeline_topics: PipelineTopics, tmp_path: Path
) -> None:
    source = topic_factory("in", partitions=4)
    sink = topic_factory("out", partitions=4)
    produce_numbered(cluster, source, 3000)
    env = _env(cluster, source, sink, TEST_DELAY_MS="2")
    pipeline_topics(build_copy(env["TEST_PIPELINE"], source, sink))
    ports = [free_port(), free_port()]
    logs = [tmp_path / "worker-0.log", tmp_path / "worker-1.log"]

    def start(slot: int) -> subprocess.Popen[bytes]:
        return start_worker(
            env, "copy", slot, log=logs[slot], extra=("--health-port", str(ports[slot]))
        )

    first = start(0)
    second = None
    try:
        _wait_for(lambda: _status(ports[0], "/livez") == 200, 30, "the probe port")
        _wait_for(lambda: _status(ports[0], "/readyz") == 200, 60, "readiness after joining")
        # a rebalance (a second worker joins): liveness never fails meanwhile
        seen: list[int | None] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                seen.append(_status(ports[0], "/livez"))
                time.sleep(0.2)

        watcher = threading.Thread(target=watch)
        watcher.start()
        second = start(1)
        _wait_for(lambda: _status(ports[1], "/readyz") == 200, 60, "the second worker ready")
        _wait_for(lambda: "partitions revoked" in logs[0].read_text(), 30, "the rebalance")
        time.sleep(1)
        stop.set()
        watcher.join()
        assert seen, "the probe was watched"
        assert set(seen) == {200}, f"liveness failed during the rebalance: {seen}"
        # SIGSTOP: the probe does not answer (a kubelet's probe times out and fails)
        first.send_signal(signal.SIGSTOP)
        assert _status(ports[0], "/livez", timeout=2.0) is None
        first.send_signal(signal.SIGCONT)
        _wait_for(lambda: _status(ports[0], "/livez") == 200, 30, "liveness after SIGCONT")
    finally:
        for worker in (first, second):
            if worker is not None:
                worker.send_signal(signal.SIGCONT)
                _stop(worker)
