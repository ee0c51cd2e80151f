"""The circuit breaker of one dependency: closed -> open -> half-open -> closed.

::

    CLOSED --failure_threshold consecutive failures--> OPEN --open_for_s passed--> HALF_OPEN
    HALF_OPEN --a probe succeeds--> CLOSED        HALF_OPEN --a probe fails--> OPEN

Every transition bumps an epoch: a call admitted before a transition cannot change the state
after it (a slow success from before an outage must not close a fresh breaker). The breaker
also keeps the counters a snapshot shows and the Prometheus series of its dependency.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streams.exceptions import DependencyUnavailable

__all__ = ["BreakerState", "CircuitBreaker", "Ticket"]

log = logging.getLogger("streams.dependency")


class BreakerState(enum.Enum):
    """State of a dependency's circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_STATE_GAUGE_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


@dataclass(frozen=True)
class Ticket:
    """One admitted call: the breaker epoch it was admitted in, and whether it is a probe."""

    epoch: int
    probe: bool
    started: float


class CircuitBreaker:
    """Admits or rejects the calls of one dependency and learns from their outcomes."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int,
        open_for_s: float,
        half_open_max_calls: int,
        retry_delay_s: float | None,
        clock: Callable[[], float],
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.open_for_s = open_for_s
        self.half_open_max_calls = half_open_max_calls
        self.retry_delay_s = retry_delay_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._epoch = 0
        self._opened_at = 0.0
        self._consecutive_failures = 0
        self._probes_in_flight = 0
        self._in_flight = 0
        # prometheus_client is about 2 MiB; a worker loads it when a stage declares a dependency,
        # not with the package (the streams facade imports this module)
        from streams.dependency import metrics  # noqa: PLC0415

        self._counts = dict.fromkeys(metrics.OUTCOMES, 0)
        self._m_calls = {o: metrics.CALLS.labels(name, o) for o in metrics.OUTCOMES}
        self._m_state = metrics.BREAKER_STATE.labels(name)
        self._m_in_flight = metrics.IN_FLIGHT.labels(name)
        self._m_seconds = metrics.CALL_SECONDS.labels(name)
        self._m_state.set(0)
        self._m_in_flight.set(0)

    @property
    def state(self) -> BreakerState:
        """The breaker state; OPEN turns HALF_OPEN by itself once ``open_for_s`` has passed."""
        with self._lock:
            self._refresh()
            return self._state

    def available(self) -> bool:
        """False when a call made now would be rejected without being made."""
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

    def admit(self) -> Ticket:
        """Let a call through, or raise DependencyUnavailable (counted as rejected)."""
        with self._lock:
            self._refresh()
            if self._state is BreakerState.OPEN:
                remaining = max(0.0, self.open_for_s - (self._clock() - self._opened_at))
                self._count("rejected")
                delay = self.retry_delay_s if self.retry_delay_s is not None else remaining
                raise self.unavailable(
                    f"circuit breaker open for another {remaining:.3g} s after "
                    f"{self._consecutive_failures} consecutive failures",
                    delay,
                )
            probe = self._state is BreakerState.HALF_OPEN
            if probe:
                if self._probes_in_flight >= self.half_open_max_calls:
                    self._count("rejected")
                    raise self.unavailable(
                        f"circuit breaker half-open, {self._probes_in_flight} probe call(s) in "
                        "flight",
                        self.retry_delay_s,
                    )
                self._probes_in_flight += 1
            return Ticket(epoch=self._epoch, probe=probe, started=time.perf_counter())

    def succeeded(self, ticket: Ticket) -> None:
        with self._lock:
            self._count("success")
            self._m_seconds.observe(time.perf_counter() - ticket.started)
            if ticket.epoch != self._epoch:
                return
            if ticket.probe:
                self._transition(BreakerState.CLOSED, "probe call succeeded")
            else:
                self._consecutive_failures = 0

    def failed(self, ticket: Ticket, outcome: str, message: str) -> DependencyUnavailable:
        """Count a failure (``failure`` or ``timeout``); the error the caller raises."""
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
            return self.unavailable(message, self.retry_delay_s)

    def released(self, ticket: Ticket) -> None:
        """The call ended in neither success nor dependency failure: free its probe slot."""
        with self._lock:
            if ticket.probe and ticket.epoch == self._epoch:
                self._probes_in_flight -= 1

    def fallback_served(self) -> None:
        with self._lock:
            self._count("fallback")

    def flight(self, delta: int) -> None:
        with self._lock:
            self._in_flight += delta
            self._m_in_flight.set(self._in_flight)

    def unavailable(self, message: str, delay_s: float | None) -> DependencyUnavailable:
        return DependencyUnavailable(
            self.name,
            message,
            delay_s=delay_s,
            hint=f"check that {self.name} is up and answering in time; the record waits in "
            "the retry topics meanwhile",
        )

    def _count(self, outcome: str) -> None:
        self._counts[outcome] += 1
        self._m_calls[outcome].inc()
