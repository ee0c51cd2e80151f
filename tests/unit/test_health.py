"""The worker's probes (streams.runtime.health) on a real HTTP port, over a stand-in worker."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from streams.runtime.health import HealthServer


@dataclass
class FakeWorker:
    heartbeat: float
    ready: bool = False


@pytest.fixture
def server() -> Iterator[HealthServer]:
    health = HealthServer("127.0.0.1", 0, watchdog_s=5.0)
    yield health
    health.close()


def probe(server: HealthServer, path: str) -> tuple[int, dict[str, object]]:
    url = f"http://127.0.0.1:{server.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_starting_worker_is_alive_but_not_ready(server: HealthServer) -> None:
    assert probe(server, "/livez") == (200, {"status": "starting"})
    assert probe(server, "/readyz") == (503, {"status": "starting"})


def test_ready_once_joined_and_alive_while_the_loop_turns(server: HealthServer) -> None:
    worker = FakeWorker(heartbeat=time.monotonic())
    server.worker = worker
    assert probe(server, "/readyz") == (503, {"status": "joining its group"})
    worker.ready = True
    assert probe(server, "/readyz") == (200, {"status": "ready"})
    status, body = probe(server, "/livez")
    assert status == 200
    assert body["status"] == "alive"


def test_a_loop_that_has_not_turned_within_the_bound_fails_liveness(server: HealthServer) -> None:
    server.worker = FakeWorker(heartbeat=time.monotonic() - 6.0, ready=True)
    status, body = probe(server, "/livez")
    assert status == 503
    assert body["status"] == "stuck"
    assert body["bound_s"] == 5.0
    # control: just inside the bound it is alive
    server.worker = FakeWorker(heartbeat=time.monotonic() - 4.0, ready=True)
    assert probe(server, "/livez")[0] == 200


def test_an_unknown_path_is_404(server: HealthServer) -> None:
    assert probe(server, "/metrics")[0] == 404
