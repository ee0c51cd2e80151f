"""streams.dependency against a real HTTP server on 127.0.0.1, switched between ok, slow, down
(closed: connection refused) and 500 errors.

The server counts the requests it receives, which shows that an open breaker does not call the
dependency at all. A fake clock drives the breaker so that nothing waits for ``open_for_s``.

The caller decides which answers are failures: the client functions below raise
``ConnectionError`` on a 5xx, and ``LookupError`` on a 4xx (the record's problem, not the
dependency's).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import pytest
from prometheus_client import REGISTRY

from streams.dependency import BreakerState, Dependency
from streams.exceptions import DependencyUnavailable

Mode = Literal["ok", "slow", "down", "error", "missing"]

_names = itertools.count()

MakeDependency = Callable[..., Dependency]

# The slow server answers after this long (or at teardown), far beyond the calls' timeout.
SLOW_ANSWER_S = 2.0
# urllib's own socket timeout: longer than the Dependency timeout, so that the Dependency's
# timeout is the one that fires, but bounded so that no thread can hang the test run.
CLIENT_SOCKET_TIMEOUT_S = 3.0


class _Server(ThreadingHTTPServer):
    # Handler threads are joined by server_close(), so that no thread outlives a test.
    daemon_threads = False
    backend: Backend

    def handle_error(self, *_args: object) -> None:
        # A slow answer written to a client that gave up fails; that is expected here.
        return


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server: _Server

    def do_GET(self) -> None:
        backend = self.server.backend
        mode = backend.received()
        if mode == "slow":
            backend.release.wait(SLOW_ANSWER_S)
        status = {"ok": 200, "slow": 200, "error": 500, "missing": 404}.get(mode, 500)
        body = b"ok" if status == 200 else b"nope"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        return


class Backend:
    """The dependency: a local HTTP server whose behaviour a test switches."""

    def __init__(self) -> None:
        self.mode: Mode = "ok"
        self.requests = 0
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/price"

    def received(self) -> Mode:
        with self._lock:
            self.requests += 1
            return self.mode

    def switch(self, mode: Mode) -> None:
        if mode == "down":
            self._stop()
        elif self._server is None:
            self._start()  # same port: the clients keep their URL
        self.mode = mode

    def close(self) -> None:
        self.release.set()
        self._stop()

    def _start(self) -> None:
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.backend = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="backend"
        )
        self._thread.start()

    def _stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = None
        self._thread = None


@pytest.fixture
def backend() -> Iterator[Backend]:
    server = Backend()
    yield server
    server.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make(clock: FakeClock, backend: Backend) -> Iterator[MakeDependency]:
    made: list[Dependency] = []

    def build(**kwargs: Any) -> Dependency:
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("timeout_s", 1.0)
        kwargs.setdefault("failure_threshold", 3)
        kwargs.setdefault("open_for_s", 10.0)
        dep = Dependency(f"prices-{next(_names)}", **kwargs)
        made.append(dep)
        return dep

    yield build
    backend.release.set()  # let slow answers finish, so the client threads end
    for dep in made:
        dep.close(wait=True)


# -- the clients: they decide which answers are failures ---------------------------------------

# No proxy: an http_proxy in the environment must not reroute calls to 127.0.0.1.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(url: str) -> str:
    """GET with urllib: 5xx -> ConnectionError (the dependency failed), 4xx -> LookupError."""
    try:
        with _opener.open(url, timeout=CLIENT_SOCKET_TIMEOUT_S) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code >= 500:
            raise ConnectionError(f"HTTP {exc.code} from {url}") from exc
        raise LookupError(f"HTTP {exc.code} from {url}") from exc


def fetch_unmapped(url: str) -> str:
    """GET with urllib, leaving urllib's errors as they are (HTTPError is an OSError)."""
    with _opener.open(url, timeout=CLIENT_SOCKET_TIMEOUT_S) as response:
        return str(response.read().decode())


async def afetch(port: int) -> str:
    """GET over asyncio streams: 5xx -> ConnectionError; refused -> ConnectionRefusedError."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /price HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status >= 500:
        raise ConnectionError(f"HTTP {status} from 127.0.0.1:{port}")
    if status >= 400:
        raise LookupError(f"HTTP {status} from 127.0.0.1:{port}")
    return body.decode()


def calls_total(dep: Dependency, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "streams_dependency_calls_total", {"dependency": dep.name, "outcome": outcome}
    )
    assert value is not None
    return value


def state(dep: Dependency) -> BreakerState:
    return dep.state


# -- sync: urllib through call_sync -------------------------------------------------------------


def test_sync_outage_opens_rejects_without_calling_and_recovers(
    make: MakeDependency, backend: Backend, clock: FakeClock
) -> None:
    dep = make()
    assert dep.call_sync(fetch, backend.url) == "ok"
    assert backend.requests == 1

    backend.switch("down")
    for _ in range(3):
        with pytest.raises(DependencyUnavailable) as caught:
            dep.call_sync(fetch, backend.url)
        assert isinstance(caught.value.__cause__, urllib.error.URLError)
        assert isinstance(caught.value.__cause__.reason, ConnectionRefusedError)
    assert state(dep) is BreakerState.OPEN

    backend.switch("ok")  # back, but the breaker does not know yet
    for _ in range(5):
        with pytest.raises(DependencyUnavailable, match="circuit breaker open"):
            dep.call_sync(fetch, backend.url)
    assert backend.requests == 1  # rejected calls never reached the server
    assert calls_total(dep, "rejected") == 5

    clock.now += 10.0
    assert state(dep) is BreakerState.HALF_OPEN
    assert dep.call_sync(fetch, backend.url) == "ok"
    assert state(dep) is BreakerState.CLOSED
    assert backend.requests == 2
    assert calls_total(dep, "failure") == 3
    assert calls_total(dep, "success") == 2


def test_a_slow_server_times_out_and_opens_the_breaker(
    make: MakeDependency, backend: Backend, clock: FakeClock
) -> None:
    dep = make(timeout_s=0.1, failure_threshold=2)
    backend.switch("slow")
    for _ in range(2):
        with pytest.raises(DependencyUnavailable, match=r"timed out after 0\.1 s"):
            dep.call_sync(fetch, backend.url)
    assert state(dep) is BreakerState.OPEN
    with pytest.raises(DependencyUnavailable, match="circuit breaker open"):
        dep.call_sync(fetch, backend.url)
    assert backend.requests == 2
    assert calls_total(dep, "timeout") == 2

    backend.release.set()  # the timed-out calls finish in their threads
    backend.switch("ok")
    clock.now += 10.0
    assert dep.call_sync(fetch, backend.url) == "ok"
    assert state(dep) is BreakerState.CLOSED


def test_http_500_counts_as_a_failure_when_the_caller_maps_it_to_connection_error(
    make: MakeDependency, backend: Backend
) -> None:
    dep = make(failure_threshold=2)
    backend.switch("error")
    for _ in range(2):
        with pytest.raises(DependencyUnavailable, match="ConnectionError: HTTP 500") as caught:
            dep.call_sync(fetch, backend.url)
        assert isinstance(caught.value.__cause__, ConnectionError)
    assert state(dep) is BreakerState.OPEN
    assert backend.requests == 2


def test_a_4xx_mapped_to_a_record_error_propagates_and_does_not_count(
    make: MakeDependency, backend: Backend
) -> None:
    dep = make(failure_threshold=1)
    backend.switch("missing")
    with pytest.raises(LookupError, match="HTTP 404"):
        dep.call_sync(fetch, backend.url)
    assert state(dep) is BreakerState.CLOSED
    assert dep.snapshot()["consecutive_failures"] == 0


def test_an_unmapped_urllib_4xx_counts_because_http_error_is_an_os_error(
    make: MakeDependency, backend: Backend
) -> None:
    """Why the caller must map responses: left alone, urllib's HTTPError is an OSError."""
    dep = make(failure_threshold=1)
    backend.switch("missing")
    with pytest.raises(DependencyUnavailable, match="HTTPError") as caught:
        dep.call_sync(fetch_unmapped, backend.url)
    assert isinstance(caught.value.__cause__, urllib.error.HTTPError)
    caught.value.__cause__.close()
    assert state(dep) is BreakerState.OPEN


# -- async: asyncio streams through call, one asyncio.run per batch as the runtime does -------


def test_async_outage_opens_rejects_without_calling_and_recovers(
    make: MakeDependency, backend: Backend, clock: FakeClock
) -> None:
    dep = make(max_concurrency=2)

    async def batch(n: int) -> list[str | BaseException]:
        return list(
            await asyncio.gather(
                *(dep.call(afetch, backend.port) for _ in range(n)), return_exceptions=True
            )
        )

    assert asyncio.run(batch(4)) == ["ok"] * 4
    assert backend.requests == 4

    backend.switch("down")
    results = asyncio.run(batch(3))
    assert all(
        isinstance(r, DependencyUnavailable) and isinstance(r.__cause__, ConnectionRefusedError)
        for r in results
    )
    assert state(dep) is BreakerState.OPEN

    backend.switch("ok")
    results = asyncio.run(batch(4))
    assert all(isinstance(r, DependencyUnavailable) for r in results)
    assert backend.requests == 4  # rejected without reaching the server

    # a probe while the server is still down reopens the breaker
    backend.switch("down")
    clock.now += 10.0
    assert state(dep) is BreakerState.HALF_OPEN
    results = asyncio.run(batch(1))
    assert isinstance(results[0], DependencyUnavailable)
    assert state(dep) is BreakerState.OPEN

    backend.switch("ok")
    clock.now += 10.0
    assert asyncio.run(batch(1)) == ["ok"]
    assert state(dep) is BreakerState.CLOSED
    assert asyncio.run(batch(2)) == ["ok", "ok"]
    assert backend.requests == 7


def test_async_slow_server_and_500s_count_as_failures(
    make: MakeDependency, backend: Backend
) -> None:
    dep = make(timeout_s=0.1, failure_threshold=3)

    async def one() -> str:
        return await dep.call(afetch, backend.port)

    backend.switch("slow")
    with pytest.raises(DependencyUnavailable, match=r"timed out after 0\.1 s"):
        asyncio.run(one())
    backend.switch("error")
    for _ in range(2):
        with pytest.raises(DependencyUnavailable, match="ConnectionError: HTTP 500"):
            asyncio.run(one())
    assert state(dep) is BreakerState.OPEN
    snap = dep.snapshot()
    assert (snap["calls"]["timeout"], snap["calls"]["failure"]) == (1, 2)
    assert snap["in_flight"] == 0
    assert backend.requests == 3


def test_the_fallback_answers_during_an_outage(make: MakeDependency, backend: Backend) -> None:
    dep = make(failure_threshold=1, fallback=lambda url: f"cached for {url}")
    backend.switch("down")
    assert dep.call_sync(fetch, backend.url) == f"cached for {backend.url}"
    assert dep.call_sync(fetch, backend.url) == f"cached for {backend.url}"
    assert state(dep) is BreakerState.OPEN
    assert calls_total(dep, "fallback") == 2


def test_the_server_can_be_switched_to_every_mode(backend: Backend) -> None:
    """The fixture itself: each mode answers (or refuses) as the tests above assume."""
    assert fetch(backend.url) == "ok"
    backend.switch("error")
    with pytest.raises(ConnectionError):
        fetch(backend.url)
    backend.switch("down")
    with pytest.raises(urllib.error.URLError):
        fetch(backend.url)
    backend.switch("ok")
    assert fetch(backend.url) == "ok"
