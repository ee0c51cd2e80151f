"""A small real HTTP pricing service that can be made slow or taken down, for demos and tests.

    GET /price?sku=S&quantity=Q   -> {"sku": S, "unit_price_cents": N, "total_cents": N*Q}
    GET /health                   -> {"mode": ..., "requests": ..., "unique_keys": ...}

Callers send an ``Idempotency-Key`` header; the service counts how many distinct keys it has
priced and how many requests repeated a key, so a test can tell retried calls from new ones.

Modes: ``ok``; ``slow`` (each request sleeps ``slow_s`` first); ``error`` (HTTP 503);
``down`` (the listening socket is closed: connections are refused, as with a crashed service).
Run it alone: ``python -m streams.examples.pricing_service --port 18090``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlparse

__all__ = ["Mode", "PricingService", "fetch_total"]

Mode = Literal["ok", "slow", "error", "down"]

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy
_SERVER_ERROR = 500


def fetch_total(url: str, idempotency_key: str, *, timeout_s: float = 1.0) -> int:
    """``total_cents`` from a ``/price?...`` URL of this service, sent with the key.

    A 5xx answer raises ConnectionError (retryable, like a refused connection); other HTTP
    errors raise ``urllib.error.HTTPError`` as they are.
    """
    request = urllib.request.Request(url, headers={"Idempotency-Key": idempotency_key})  # noqa: S310
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            return int(json.loads(response.read())["total_cents"])
    except urllib.error.HTTPError as error:
        if error.code >= _SERVER_ERROR:
            raise ConnectionError(f"pricing answered {error.code}") from error
        raise


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    service: PricingService

    def handle_error(self, *_args: object) -> None:
        return  # a client that hung up mid-response is not news


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        service = self.server.service
        url = urlparse(self.path)
        if url.path == "/health":
            self._reply(200, service.stats())
            return
        if url.path != "/price":
            self._reply(404, {"error": "unknown path"})
            return
        key = self.headers.get("Idempotency-Key", "")
        service.count(key)
        if service.mode == "slow":
            time.sleep(service.slow_s)
        if service.mode == "error":
            self._reply(503, {"error": "pricing is unavailable"})
            return
        query = parse_qs(url.query)
        sku = query.get("sku", [""])[0]
        quantity = int(query.get("quantity", ["1"])[0])
        # a stable price per SKU: the same answer on every retry
        unit = 100 + int(hashlib.sha256(sku.encode()).hexdigest()[:6], 16) % 9900
        self._reply(200, {"sku": sku, "unit_price_cents": unit, "total_cents": unit * quantity})

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args: Any) -> None:
        return


class PricingService:
    """The service in a background thread on 127.0.0.1; ``set_mode`` changes its behaviour."""

    def __init__(self, port: int = 0, *, slow_s: float = 3.0) -> None:
        self.port = port
        self.slow_s = slow_s
        self.mode: Mode = "ok"
        self._lock = threading.Lock()
        self._requests = 0
        self._keys: set[str] = set()
        self._repeats = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, key: str) -> None:
        with self._lock:
            self._requests += 1
            if key in self._keys:
                self._repeats += 1
            elif key:
                self._keys.add(key)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "mode": self.mode,
                "requests": self._requests,
                "unique_keys": len(self._keys),
                "repeated_keys": self._repeats,
            }

    def start(self) -> PricingService:
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.service = self
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="pricing", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def set_mode(self, mode: Mode) -> None:
        """``down`` closes the socket (connection refused); any other mode reopens it."""
        if mode == "down" and self._server is not None:
            self.stop()
        elif mode != "down" and self._server is None:
            self.start()
        self.mode = mode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18090)
    args = parser.parse_args()
    service = PricingService(args.port).start()
    print(f"pricing service on {service.url}", flush=True)  # noqa: T201
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        service.stop()


if __name__ == "__main__":
    main()
