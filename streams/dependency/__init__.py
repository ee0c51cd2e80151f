"""An external dependency a handler calls, kept at arm's length: timeout, concurrency, breaker.

Wrap each call a handler makes to something outside the pipeline (an HTTP service, a
database) in one ``Dependency`` per dependency::

    prices = Dependency("prices-api", timeout_s=0.5, max_concurrency=4)

    def handle(record):
        price = prices.call_sync(fetch_price, record.value.sku)

A call that times out, or raises one of ``failure_types`` (``OSError`` and its subclasses by
default), raises ``DependencyUnavailable``: a ``RetryLater``, so the stage parks the record in
its delayed retry topics instead of stopping. After ``failure_threshold`` consecutive failures
the circuit breaker opens: calls are rejected at once, without touching the dependency, for
``open_for_s`` seconds. Then up to ``half_open_max_calls`` probe calls are let through
(half-open): a successful probe closes the breaker, a failed one opens it again.

The caller decides which answers are failures. Only exceptions of ``failure_types`` count; a
bad answer must be mapped to one of them by the function that is called (for example: raise
``ConnectionError`` on an HTTP 5xx). Any other exception propagates unchanged and does not
count against the dependency: it is a bug in the handler or a bad record. Beware that
``urllib.error.HTTPError`` is an ``OSError``: with urllib, map 4xx answers to something else
(or they count as the dependency failing).

When a breaker is open (log line ``circuit breaker closed -> open`` at WARNING, gauge
``streams_dependency_breaker_state`` = 2): check the dependency named in the message (is it up,
reachable, answering in time?). Nothing is lost meanwhile: the records that needed it are
parked in the stage's retry topics and come back when their delay is over. The breaker closes
by itself after a successful probe; no restart is needed.

Modules: ``breaker`` (the circuit breaker's state machine and counters), ``metrics`` (the
Prometheus series); this module holds ``Dependency``, the calls themselves.

Metrics (default prometheus registry, labelled by ``dependency``; a name must be unique in a
process, two ``Dependency`` objects with the same name share their series):

- ``streams_dependency_calls_total{outcome}``: ``success``, ``failure`` (raised one of
  ``failure_types``), ``timeout``, ``rejected`` (breaker open, not called); ``fallback`` counts
  the results served by the fallback, in addition to the outcome that made it necessary.
  Calls whose function raised some other exception are not counted.
- ``streams_dependency_breaker_state``: 0 closed, 1 half-open, 2 open.
- ``streams_dependency_in_flight``: calls running now (a timed-out sync call, still running in
  its thread, is counted until it returns).
- ``streams_dependency_call_seconds``: how long the calls that were made took, waiting for a
  concurrency slot included.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, Self, TypeVar, cast

from streams.dependency.breaker import BreakerState, CircuitBreaker
from streams.exceptions import DependencyUnavailable

__all__ = ["BreakerState", "Dependency", "snapshots"]

# Every live Dependency of this process, so that a worker can publish their breaker states.
_LIVE: weakref.WeakSet[Dependency] = weakref.WeakSet()


def snapshots() -> list[dict[str, Any]]:
    """The ``snapshot()`` of every Dependency alive in this process, by name."""
    return sorted((d.snapshot() for d in list(_LIVE)), key=lambda s: str(s["name"]))


P = ParamSpec("P")
T = TypeVar("T")


class _TimedOutError(Exception):
    """Internal: the call did not finish within ``timeout_s`` (slot wait included)."""


class Dependency:
    """One external dependency: timeout, concurrency limit and circuit breaker around its calls.

    ``clock`` drives the breaker only (how long it stays open); timeouts use real time.
    Async calls (``call``) and sync calls (``call_sync``) have separate concurrency limits of
    ``max_concurrency`` each; the async limit is per event loop.
    """

    # Over 50 lines: one check with its own message per setting, then the state it needs.
    def __init__(
        self,
        name: str,
        *,
        timeout_s: float = 2.0,
        max_concurrency: int = 8,
        failure_threshold: int = 5,
        open_for_s: float = 10.0,
        half_open_max_calls: int = 1,
        retry_delay_s: float | None = None,
        fallback: Callable[..., Any] | None = None,
        failure_types: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError, OSError),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not name:
            raise ValueError("a dependency needs a name")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if open_for_s < 0:
            raise ValueError(f"open_for_s must be >= 0, got {open_for_s}")
        if half_open_max_calls < 1:
            raise ValueError(f"half_open_max_calls must be >= 1, got {half_open_max_calls}")
        if retry_delay_s is not None and retry_delay_s < 0:
            raise ValueError(f"retry_delay_s must be >= 0 or None, got {retry_delay_s}")
        self.name = name
        _LIVE.add(self)
        self.timeout_s = timeout_s
        self.max_concurrency = max_concurrency
        self.failure_threshold = failure_threshold
        self.open_for_s = open_for_s
        self.half_open_max_calls = half_open_max_calls
        self.retry_delay_s = retry_delay_s
        self.fallback = fallback
        self.failure_types = failure_types

        self._lock = threading.Lock()  # guards the thread pool and the per-loop semaphores
        self.breaker = CircuitBreaker(
            name,
            failure_threshold=failure_threshold,
            open_for_s=open_for_s,
            half_open_max_calls=half_open_max_calls,
            retry_delay_s=retry_delay_s,
            clock=clock,
        )

        self._sync_slots = threading.BoundedSemaphore(max_concurrency)
        self._executor: ThreadPoolExecutor | None = None
        # One semaphore per event loop: an asyncio.Semaphore binds to the loop it first waits
        # in, and the runtime runs each batch in a new loop (asyncio.run). Weak keys let the
        # semaphores of finished loops go away with them.
        self._async_slots: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Semaphore
        ] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"Dependency({self.name!r}, state={self.state.value})"

    # -- breaker state ------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The breaker state; OPEN turns HALF_OPEN by itself once ``open_for_s`` has passed."""
        return self.breaker.state

    def available(self) -> bool:
        """False when a call made now would be rejected without being made (breaker open, or
        half-open with every probe slot taken). The runtime uses it to skip calling."""
        return self.breaker.available()

    def snapshot(self) -> dict[str, Any]:
        """Name, state, consecutive failures, calls by outcome and calls in flight."""
        return self.breaker.snapshot()

    def _fallback(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call the fallback (the callers check there is one) and count it."""
        self.breaker.fallback_served()
        return cast("Callable[..., Any]", self.fallback)(*args, **kwargs)

    # -- async calls ----------------------------------------------------------------------------

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` within the timeout, the concurrency limit and the breaker.

        Raises DependencyUnavailable on a timeout, a failure or an open breaker, unless a
        fallback is set (its result is returned; an async fallback is awaited).
        """
        try:
            ticket = self.breaker.admit()
        except DependencyUnavailable:
            if self.fallback is None:
                raise
            return cast("T", await _maybe_await(self._fallback(args, kwargs)))

        scope = asyncio.timeout(self.timeout_s)
        try:
            async with scope, self._loop_slots():
                self.breaker.flight(+1)
                try:
                    result = await fn(*args, **kwargs)
                finally:
                    self.breaker.flight(-1)
        except TimeoutError as exc:
            if scope.expired():
                error = self.breaker.failed(
                    ticket, "timeout", f"timed out after {self.timeout_s:g} s"
                )
            elif isinstance(exc, self.failure_types):
                error = self.breaker.failed(ticket, "failure", _describe(exc))
            else:
                self.breaker.released(ticket)
                raise
            cause: BaseException = exc
        except self.failure_types as exc:
            error = self.breaker.failed(ticket, "failure", _describe(exc))
            cause = exc
        except BaseException:
            self.breaker.released(ticket)
            raise
        else:
            self.breaker.succeeded(ticket)
            return result
        if self.fallback is None:
            raise error from cause
        return cast("T", await _maybe_await(self._fallback(args, kwargs)))

    def _loop_slots(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        with self._lock:
            slots = self._async_slots.get(loop)
            if slots is None:
                slots = self._async_slots[loop] = asyncio.Semaphore(self.max_concurrency)
            return slots

    # -- sync calls -----------------------------------------------------------------------------

    def call_sync(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn(*args, **kwargs)`` in a worker thread within the timeout, the concurrency
        limit and the breaker.

        Raises DependencyUnavailable on a timeout, a failure or an open breaker, unless a
        fallback is set (its result is returned).

        A call that times out is not stopped (Python cannot stop a thread): it keeps running in
        its worker thread, holding its concurrency slot, until ``fn`` returns. Give ``fn`` its
        own timeout too (``urlopen(url, timeout=...)``, a socket or driver timeout), or a hung
        call holds a slot forever and the interpreter waits for it at exit.
        """
        try:
            ticket = self.breaker.admit()
        except DependencyUnavailable:
            if self.fallback is None:
                raise
            return cast("T", self._fallback(args, kwargs))

        try:
            result = self._run_in_thread(fn, args, kwargs)
        except _TimedOutError as exc:
            error = self.breaker.failed(ticket, "timeout", f"timed out after {self.timeout_s:g} s")
            cause: BaseException = exc
        except self.failure_types as exc:
            error = self.breaker.failed(ticket, "failure", _describe(exc))
            cause = exc
        except BaseException:
            self.breaker.released(ticket)
            raise
        else:
            self.breaker.succeeded(ticket)
            return result
        if self.fallback is None:
            raise error from cause
        return cast("T", self._fallback(args, kwargs))

    def _run_in_thread(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        deadline = time.perf_counter() + self.timeout_s
        # Waiting for a slot counts toward the timeout: a saturated dependency is a slow one.
        if not self._sync_slots.acquire(timeout=self.timeout_s):
            raise _TimedOutError
        self.breaker.flight(+1)
        context = contextvars.copy_context()

        def run() -> T:
            # The slot is given back when fn returns, not when the caller stops waiting: the
            # thread of a timed-out call is still busy, so the pool never queues behind it.
            try:
                return context.run(fn, *args, **kwargs)
            finally:
                self._sync_call_done()

        try:
            future = self._thread_pool().submit(run)
        except BaseException:
            self._sync_call_done()
            raise
        future.add_done_callback(self._sync_call_cancelled)
        try:
            return future.result(timeout=max(0.0, deadline - time.perf_counter()))
        except TimeoutError as exc:
            if future.done() and future.exception(timeout=0) is exc:
                raise  # fn's own TimeoutError
            raise _TimedOutError from None

    def _sync_call_done(self) -> None:
        self.breaker.flight(-1)
        self._sync_slots.release()

    def _sync_call_cancelled(self, future: Future[Any]) -> None:
        """A call cancelled by close() before its thread started it never runs run()."""
        if future.cancelled():
            self._sync_call_done()

    def _thread_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.max_concurrency,
                    thread_name_prefix=f"dependency-{self.name}",
                )
            return self._executor

    def close(self, *, wait: bool = False) -> None:
        """Shut down the worker threads of sync calls (a later call_sync starts new ones).

        ``wait=True`` waits for calls still running, timed-out ones included.
        """
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close(wait=True)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value
