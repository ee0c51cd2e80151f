"""Isolate an external dependency a handler calls: a timeout, a concurrency limit, a breaker.

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
import enum
import inspect
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ParamSpec, Self, TypeVar, cast

from prometheus_client import Counter, Gauge, Histogram

from streams.exceptions import DependencyUnavailable

__all__ = ["BreakerState", "Dependency", "snapshots"]

# Every live Dependency of this process, so that a worker can publish their breaker states.
_LIVE: weakref.WeakSet[Dependency] = weakref.WeakSet()


def snapshots() -> list[dict[str, Any]]:
    """The ``snapshot()`` of every Dependency alive in this process, by name."""
    return sorted((d.snapshot() for d in list(_LIVE)), key=lambda s: str(s["name"]))


P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger("streams.isolation")

OUTCOMES = ("success", "failure", "timeout", "rejected", "fallback")

_CALLS = Counter(
    "streams_dependency_calls",
    "Calls to an external dependency, by outcome",
    ["dependency", "outcome"],
)
_BREAKER_STATE = Gauge(
    "streams_dependency_breaker_state",
    "Circuit breaker state of a dependency: 0 closed, 1 half-open, 2 open",
    ["dependency"],
)
_IN_FLIGHT = Gauge(
    "streams_dependency_in_flight",
    "Calls to a dependency running now",
    ["dependency"],
)
_CALL_SECONDS = Histogram(
    "streams_dependency_call_seconds",
    "Duration of the calls made to a dependency, waiting for a concurrency slot included",
    ["dependency"],
    # Dependency timeouts are usually 0.1-10 s; the buckets bracket them so that a latency
    # creeping up toward the timeout shows before the calls start failing.
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


class BreakerState(enum.Enum):
    """State of a dependency's circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_STATE_GAUGE_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


@dataclass(frozen=True)
class _Ticket:
    """One admitted call: the breaker epoch it was admitted in, and whether it is a probe."""

    epoch: int
    probe: bool
    started: float


class _TimedOutError(Exception):
    """Internal: the call did not finish within ``timeout_s`` (slot wait included)."""


class Dependency:
    """One external dependency: timeout, concurrency limit and circuit breaker around its calls.

    ``clock`` drives the breaker only (how long it stays open); timeouts use real time.
    Async calls (``call``) and sync calls (``call_sync``) have separate concurrency limits of
    ``max_concurrency`` each; the async limit is per event loop.
    """

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
        self._clock = clock

        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        # Bumped on every transition: a call admitted before a transition must not change the
        # state after it (a slow success from before an outage must not close a fresh breaker).
        self._epoch = 0
        self._opened_at = 0.0
        self._consecutive_failures = 0
        self._probes_in_flight = 0
        self._in_flight = 0
        self._counts = dict.fromkeys(OUTCOMES, 0)

        self._sync_slots = threading.BoundedSemaphore(max_concurrency)
        self._executor: ThreadPoolExecutor | None = None
        # One semaphore per event loop: an asyncio.Semaphore binds to the loop it first waits
        # in, and the runtime runs each batch in a new loop (asyncio.run). Weak keys let the
        # semaphores of finished loops go away with them.
        self._async_slots: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Semaphore
        ] = weakref.WeakKeyDictionary()

        self._m_calls = {outcome: _CALLS.labels(name, outcome) for outcome in OUTCOMES}
        self._m_state = _BREAKER_STATE.labels(name)
        self._m_in_flight = _IN_FLIGHT.labels(name)
        self._m_seconds = _CALL_SECONDS.labels(name)
        self._m_state.set(0)
        self._m_in_flight.set(0)

    def __repr__(self) -> str:
        return f"Dependency({self.name!r}, state={self.state.value})"

    # -- breaker state ------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The breaker state; OPEN turns HALF_OPEN by itself once ``open_for_s`` has passed."""
        with self._lock:
            self._refresh()
            return self._state

    def available(self) -> bool:
        """False when a call made now would be rejected without being made (breaker open, or
        half-open with every probe slot taken). The runtime uses it to skip calling."""
        with self._lock:
            self._refresh()
            if self._state is BreakerState.OPEN:
                return False
            return not (
                self._state is BreakerState.HALF_OPEN
                and self._probes_in_flight >= self.half_open_max_calls
            )

    def snapshot(self) -> dict[str, Any]:
        """Name, state, consecutive failures, calls by outcome and calls in flight."""
        with self._lock:
            self._refresh()
            return {
                "name": self.name,
                "state": self._state.value,
                "consecutive_failures": self._consecutive_failures,
                "calls": dict(self._counts),
                "in_flight": self._in_flight,
            }

    def _refresh(self) -> None:
        """Turn OPEN into HALF_OPEN once open_for_s has passed. Holds the lock."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.open_for_s:
            self._transition(BreakerState.HALF_OPEN, f"{self.open_for_s:g} s passed, probing")

    def _transition(self, new: BreakerState, reason: str) -> None:
        """Change state and log it. Holds the lock."""
        old = self._state
        self._state = new
        self._epoch += 1
        self._probes_in_flight = 0
        if new is BreakerState.OPEN:
            self._opened_at = self._clock()
        elif new is BreakerState.CLOSED:
            self._consecutive_failures = 0
        self._m_state.set(_STATE_GAUGE_VALUE[new])
        if new is BreakerState.OPEN:
            log.warning(
                "dependency %s: circuit breaker %s -> %s: %s; calls are rejected for %g s and "
                "their records wait in the retry topics: check %s",
                self.name,
                old.value,
                new.value,
                reason,
                self.open_for_s,
                self.name,
            )
        else:
            log.warning(
                "dependency %s: circuit breaker %s -> %s: %s",
                self.name,
                old.value,
                new.value,
                reason,
            )

    def _admit(self) -> _Ticket:
        """Let a call through, or raise DependencyUnavailable (counted as rejected)."""
        with self._lock:
            self._refresh()
            if self._state is BreakerState.OPEN:
                remaining = max(0.0, self.open_for_s - (self._clock() - self._opened_at))
                self._count("rejected")
                delay = self.retry_delay_s if self.retry_delay_s is not None else remaining
                raise self._unavailable(
                    f"circuit breaker open for another {remaining:.3g} s after "
                    f"{self._consecutive_failures} consecutive failures",
                    delay,
                )
            probe = self._state is BreakerState.HALF_OPEN
            if probe:
                if self._probes_in_flight >= self.half_open_max_calls:
                    self._count("rejected")
                    raise self._unavailable(
                        f"circuit breaker half-open, {self._probes_in_flight} probe call(s) in "
                        "flight",
                        self.retry_delay_s,
                    )
                self._probes_in_flight += 1
            return _Ticket(epoch=self._epoch, probe=probe, started=time.perf_counter())

    def _succeeded(self, ticket: _Ticket) -> None:
        with self._lock:
            self._count("success")
            self._m_seconds.observe(time.perf_counter() - ticket.started)
            if ticket.epoch != self._epoch:
                return
            if ticket.probe:
                self._transition(BreakerState.CLOSED, "probe call succeeded")
            else:
                self._consecutive_failures = 0

    def _failed(self, ticket: _Ticket, outcome: str, message: str) -> DependencyUnavailable:
        with self._lock:
            self._count(outcome)
            self._m_seconds.observe(time.perf_counter() - ticket.started)
            if ticket.epoch == self._epoch:
                self._consecutive_failures += 1
                if ticket.probe:
                    self._transition(BreakerState.OPEN, f"probe call failed: {message}")
                elif self._consecutive_failures >= self.failure_threshold:
                    self._transition(
                        BreakerState.OPEN,
                        f"{self._consecutive_failures} consecutive failures, last: {message}",
                    )
            return self._unavailable(message, self.retry_delay_s)

    def _released(self, ticket: _Ticket) -> None:
        """The call ended in neither success nor dependency failure: free its probe slot."""
        with self._lock:
            if ticket.probe and ticket.epoch == self._epoch:
                self._probes_in_flight -= 1

    def _count(self, outcome: str) -> None:
        self._counts[outcome] += 1
        self._m_calls[outcome].inc()

    def _unavailable(self, message: str, delay_s: float | None) -> DependencyUnavailable:
        error = DependencyUnavailable(self.name, message, delay_s=delay_s)
        error.hint = (
            f"check that {self.name} is up and answering in time; the record waits in the "
            "retry topics meanwhile"
        )
        return error

    def _flight(self, delta: int) -> None:
        with self._lock:
            self._in_flight += delta
            self._m_in_flight.set(self._in_flight)

    def _fallback(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call the fallback (the callers check there is one) and count it."""
        with self._lock:
            self._count("fallback")
        return cast("Callable[..., Any]", self.fallback)(*args, **kwargs)

    # -- async calls ----------------------------------------------------------------------------

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` within the timeout, the concurrency limit and the breaker.

        Raises DependencyUnavailable on a timeout, a failure or an open breaker, unless a
        fallback is set (its result is returned; an async fallback is awaited).
        """
        try:
            ticket = self._admit()
        except DependencyUnavailable:
            if self.fallback is None:
                raise
            return cast("T", await _maybe_await(self._fallback(args, kwargs)))

        scope = asyncio.timeout(self.timeout_s)
        try:
            async with scope, self._loop_slots():
                self._flight(+1)
                try:
                    result = await fn(*args, **kwargs)
                finally:
                    self._flight(-1)
        except TimeoutError as exc:
            if scope.expired():
                error = self._failed(ticket, "timeout", f"timed out after {self.timeout_s:g} s")
            elif isinstance(exc, self.failure_types):
                error = self._failed(ticket, "failure", _describe(exc))
            else:
                self._released(ticket)
                raise
            cause: BaseException = exc
        except self.failure_types as exc:
            error = self._failed(ticket, "failure", _describe(exc))
            cause = exc
        except BaseException:
            self._released(ticket)
            raise
        else:
            self._succeeded(ticket)
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
            ticket = self._admit()
        except DependencyUnavailable:
            if self.fallback is None:
                raise
            return cast("T", self._fallback(args, kwargs))

        try:
            result = self._run_in_thread(fn, args, kwargs)
        except _TimedOutError as exc:
            error = self._failed(ticket, "timeout", f"timed out after {self.timeout_s:g} s")
            cause: BaseException = exc
        except self.failure_types as exc:
            error = self._failed(ticket, "failure", _describe(exc))
            cause = exc
        except BaseException:
            self._released(ticket)
            raise
        else:
            self._succeeded(ticket)
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
        self._flight(+1)
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
        self._flight(-1)
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
