"""A worker's health endpoints, for probes: ``/livez`` and ``/readyz`` on ``--health-port``.

- ``/livez`` answers 200 while the worker loop turns: it fails (503) once the loop has not
  turned for ``watchdog_s`` (the bound after which the watchdog restarts the worker anyway). A
  rebalance or a retry partition held until due never stops the loop for that long. While the
  worker starts (waiting for the schema registry, say) it answers 200: the process is alive.
- ``/readyz`` answers 200 once the worker has joined its group (its first assignment, possibly
  empty) with its transactional producer initialised; 503 before, with the reason.

Both answer a small JSON document. The server listens on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

__all__ = ["HealthServer", "Probed"]


class Probed(Protocol):
    """What the endpoints read of a running worker (StageRunner, SinkRunner)."""

    @property
    def heartbeat(self) -> float: ...

    @property
    def ready(self) -> bool: ...


class HealthServer:
    """Serves the probes of one worker from a daemon thread."""

    def __init__(self, host: str, port: int, *, watchdog_s: float) -> None:
        self.watchdog_s = watchdog_s
        self.worker: Probed | None = None  # None while the worker is starting
        self.started_at = time.monotonic()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route: dict[str, Callable[[], tuple[HTTPStatus, dict[str, Any]]]] = {
                    "/livez": owner.liveness,
                    "/readyz": owner.readiness,
                }
                answer = route.get(self.path.split("?", 1)[0])
                status, body = (
                    answer() if answer else (HTTPStatus.NOT_FOUND, {"error": "unknown path"})
                )
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: Any) -> None:
                return  # a probe every few seconds is not news

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, name="health", daemon=True).start()

    def liveness(self) -> tuple[HTTPStatus, dict[str, Any]]:
        if self.worker is None:
            return HTTPStatus.OK, {"status": "starting"}
        age = time.monotonic() - self.worker.heartbeat
        if age > self.watchdog_s:
            return HTTPStatus.SERVICE_UNAVAILABLE, {
                "status": "stuck",
                "loop_idle_s": round(age, 1),
                "bound_s": self.watchdog_s,
            }
        return HTTPStatus.OK, {"status": "alive", "loop_idle_s": round(age, 1)}

    def readiness(self) -> tuple[HTTPStatus, dict[str, Any]]:
        if self.worker is None:
            return HTTPStatus.SERVICE_UNAVAILABLE, {"status": "starting"}
        if not self.worker.ready:
            return HTTPStatus.SERVICE_UNAVAILABLE, {"status": "joining its group"}
        return HTTPStatus.OK, {"status": "ready"}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
