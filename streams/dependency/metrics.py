"""The Prometheus series of dependencies (default registry, labelled by ``dependency``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["BREAKER_STATE", "CALLS", "CALL_SECONDS", "IN_FLIGHT", "OUTCOMES"]

OUTCOMES = ("success", "failure", "timeout", "rejected", "fallback")

CALLS = Counter(
    "streams_dependency_calls",
    "Calls to an external dependency, by outcome",
    ["dependency", "outcome"],
)
BREAKER_STATE = Gauge(
    "streams_dependency_breaker_state",
    "Circuit breaker state of a dependency: 0 closed, 1 half-open, 2 open",
    ["dependency"],
)
IN_FLIGHT = Gauge(
    "streams_dependency_in_flight",
    "Calls to a dependency running now",
    ["dependency"],
)
CALL_SECONDS = Histogram(
    "streams_dependency_call_seconds",
    "Duration of the calls made to a dependency, waiting for a concurrency slot included",
    ["dependency"],
    # Dependency timeouts are usually 0.1-10 s; the buckets bracket them so that a latency
    # creeping up toward the timeout shows before the calls start failing.
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
