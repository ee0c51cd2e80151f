"""streams.dependency: the breaker, timeouts, concurrency limits, fallback and metrics.

A fake clock drives the breaker; fake functions stand in for the dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from streams.dependency import BreakerState, Dependency
from streams.exceptions import DependencyUnavailable, RetryLater

_names = itertools.count()

MakeDependency = Callable[..., Dependency]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Calls:
    """Fake dependency functions that count how often they are called."""

    def __init__(self) -> None:
        self.count = 0
        self.args: list[tuple[Any, ...]] = []

    def ok(self, *args: Any, **_kwargs: Any) -> str:
        self.count += 1
        self.args.append(args)
        return "ok"

    def refuse(self, *_args: Any, **_kwargs: Any) -> str:
        self.count += 1
        raise ConnectionRefusedError("refused")

    async def aok(self, *args: Any, **kwargs: Any) -> str:
        return self.ok(*args, **kwargs)

    async def arefuse(self, *_args: Any, **_kwargs: Any) -> str:
        return self.refuse()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def make(clock: FakeClock) -> Iterator[MakeDependency]:
    """Build Dependencies with unique names (metrics are process-wide) and close them after."""
    made: list[Dependency] = []

    def build(**kwargs: Any) -> Dependency:
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("failure_threshold", 3)
        kwargs.setdefault("open_for_s", 10.0)
        dep = Dependency(f"dep-{next(_names)}", **kwargs)
        made.append(dep)
        return dep

    yield build
    for dep in made:
        dep.close(wait=True)


def fail_times(dep: Dependency, calls: Calls, n: int) -> None:
    for _ in range(n):
        with pytest.raises(DependencyUnavailable):
            dep.call_sync(calls.refuse)


def state(dep: Dependency) -> BreakerState:
    """Read through a call, so that mypy does not narrow the property between reads."""
    return dep.state


def sample(name: str, dep: Dependency, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, {"dependency": dep.name, **labels})
    assert value is not None, f"no sample {name} for {dep.name} {labels}"
    return value


# -- the breaker --------------------------------------------------------------------------------


def test_consecutive_failures_reaching_the_threshold_open_the_breaker(
    make: MakeDependency, calls: Calls
) -> None:
    dep = make(failure_threshold=3)
    fail_times(dep, calls, 2)
    assert state(dep) is BreakerState.CLOSED
    assert dep.available()
    fail_times(dep, calls, 1)
    assert state(dep) is BreakerState.OPEN
    assert not dep.available()
    assert calls.count == 3


def test_a_success_resets_the_consecutive_failures(make: MakeDependency, calls: Calls) -> None:
    dep = make(failure_threshold=3)
    fail_times(dep, calls, 2)
    assert dep.call_sync(calls.ok) == "ok"
    assert dep.snapshot()["consecutive_failures"] == 0
    fail_times(dep, calls, 2)
    assert state(dep) is BreakerState.CLOSED


def test_an_open_breaker_rejects_without_calling(
    make: MakeDependency, calls: Calls, clock: FakeClock
) -> None:
    dep = make(failure_threshold=1, open_for_s=10.0)
    fail_times(dep, calls, 1)
    clock.advance(4.0)
    with pytest.raises(DependencyUnavailable) as caught:
        dep.call_sync(calls.ok)
    assert calls.count == 1  # only the failure that opened it
    assert caught.value.delay_s == pytest.approx(6.0)  # the remaining open time
    assert caught.value.dependency == dep.name
    assert "circuit breaker open" in str(caught.value)
    assert dep.name in caught.value.hint

    with pytest.raises(DependencyUnavailable):
        asyncio.run(dep.call(calls.aok))
    assert calls.count == 1


def test_retry_delay_s_overrides_the_delay_hint(make: MakeDependency, calls: Calls) -> None:
    dep = make(failure_threshold=1, retry_delay_s=30.0)
    with pytest.raises(DependencyUnavailable) as failed:
        dep.call_sync(calls.refuse)
    assert failed.value.delay_s == 30.0
    with pytest.raises(DependencyUnavailable) as rejected:
        dep.call_sync(calls.ok)
    assert rejected.value.delay_s == 30.0


def test_a_failure_without_retry_delay_leaves_the_delay_to_the_stage(
    make: MakeDependency, calls: Calls
) -> None:
    dep = make()
    with pytest.raises(DependencyUnavailable) as failed:
        dep.call_sync(calls.refuse)
    assert failed.value.delay_s is None


def test_the_breaker_half_opens_once_open_for_s_has_passed(
    make: MakeDependency, calls: Calls, clock: FakeClock
) -> None:
    dep = make(failure_threshold=1, open_for_s=10.0)
    fail_times(dep, calls, 1)
    clock.advance(9.9)
    assert state(dep) is BreakerState.OPEN
    clock.advance(0.1)
    assert state(dep) is BreakerState.HALF_OPEN
    assert dep.available()


def test_a_successful_probe_closes_the_breaker(
    make: MakeDependency, calls: Calls, clock: FakeClock
) -> None:
    dep = make(failure_threshold=2)
    fail_times(dep, calls, 2)
    clock.advance(10.0)
    assert dep.call_sync(calls.ok) == "ok"
    assert state(dep) is BreakerState.CLOSED
    assert dep.snapshot()["consecutive_failures"] == 0
    fail_times(dep, calls, 1)  # the threshold counts from zero again
    assert state(dep) is BreakerState.CLOSED


def test_a_failed_probe_reopens_the_breaker_for_open_for_s(
    make: MakeDependency, calls: Calls, clock: FakeClock
) -> None:
    dep = make(failure_threshold=1, open_for_s=10.0)
    fail_times(dep, calls, 1)
    clock.advance(10.0)
    with pytest.raises(DependencyUnavailable) as caught:
        dep.call_sync(calls.refuse)
    assert "ConnectionRefusedError" in str(caught.value)
    assert state(dep) is BreakerState.OPEN
    clock.advance(9.0)
    assert state(dep) is BreakerState.OPEN
    clock.advance(1.0)
    assert state(dep) is BreakerState.HALF_OPEN


def test_half_open_lets_only_half_open_max_calls_probes_through(
    make: MakeDependency, calls: Calls, clock: FakeClock
) -> None:
    dep = make(failure_threshold=1, half_open_max_calls=2)
    fail_times(dep, calls, 1)
    clock.advance(10.0)

    async def scenario() -> list[Any]:
        release = asyncio.Event()
        started = 0

        async def probe() -> str:
            nonlocal started
            started += 1
            await release.wait()
            return "ok"

        tasks = [asyncio.create_task(dep.call(probe)) for _ in range(2)]
        await asyncio.sleep(0)  # both probes are admitted and waiting
        assert not dep.available()
        with pytest.raises(DependencyUnavailable) as caught:
            await dep.call(probe)
        assert "half-open" in str(caught.value)
        assert started == 2  # the rejected one was not called
        release.set()
        return list(await asyncio.gather(*tasks))

    assert asyncio.run(scenario()) == ["ok", "ok"]
    assert state(dep) is BreakerState.CLOSED
    assert dep.snapshot()["calls"]["rejected"] == 1


def test_a_success_admitted_before_the_breaker_opened_does_not_close_it(
    make: MakeDependency, calls: Calls, clock: FakeClock
) -> None:
    dep = make(failure_threshold=1, timeout_s=5.0)

    async def scenario() -> None:
        release = asyncio.Event()

        async def slow_ok() -> str:
            await release.wait()
            return "ok"

        slow = asyncio.create_task(dep.call(slow_ok))
        await asyncio.sleep(0)
        with pytest.raises(DependencyUnavailable):
            await dep.call(calls.arefuse)
        clock.advance(10.0)
        assert state(dep) is BreakerState.HALF_OPEN
        release.set()
        assert await slow == "ok"

    asyncio.run(scenario())
    assert state(dep) is BreakerState.HALF_OPEN  # only a probe may close it
    assert dep.snapshot()["consecutive_failures"] == 1


def test_a_late_probe_from_an_earlier_half_open_does_not_close_the_breaker(
    make: MakeDependency, calls: Calls, clock: FakeClock
) -> None:
    dep = make(failure_threshold=1, half_open_max_calls=2, timeout_s=5.0)
    fail_times(dep, calls, 1)
    clock.advance(10.0)

    async def scenario() -> None:
        release = asyncio.Event()

        async def slow_ok() -> str:
            await release.wait()
            return "ok"

        late_probe = asyncio.create_task(dep.call(slow_ok))
        await asyncio.sleep(0)
        with pytest.raises(DependencyUnavailable):
            await dep.call(calls.arefuse)  # the other probe fails: open again
        clock.advance(10.0)
        assert state(dep) is BreakerState.HALF_OPEN  # a new half-open period
        release.set()
        assert await late_probe == "ok"

    asyncio.run(scenario())
    assert state(dep) is BreakerState.HALF_OPEN


def test_a_late_failure_from_before_recovery_does_not_reopen_the_breaker(
    make: MakeDependency, calls: Calls, clock: FakeClock
) -> None:
    dep = make(failure_threshold=1, timeout_s=5.0)

    async def scenario() -> None:
        release = asyncio.Event()

        async def slow_refuse() -> str:
            await release.wait()
            raise ConnectionResetError("reset")

        late = asyncio.create_task(dep.call(slow_refuse))
        await asyncio.sleep(0)
        with pytest.raises(DependencyUnavailable):
            await dep.call(calls.arefuse)  # opens
        clock.advance(10.0)
        assert await dep.call(calls.aok) == "ok"  # the probe closes it
        release.set()
        with pytest.raises(DependencyUnavailable, match="ConnectionResetError"):
            await late

    asyncio.run(scenario())
    assert state(dep) is BreakerState.CLOSED
    assert dep.snapshot()["consecutive_failures"] == 0


# -- timeouts -----------------------------------------------------------------------------------


def test_an_async_call_that_times_out_raises_and_counts(make: MakeDependency) -> None:
    dep = make(timeout_s=0.05, failure_threshold=2)

    async def hang() -> str:
        await asyncio.sleep(5)
        return "late"

    started = time.perf_counter()
    with pytest.raises(DependencyUnavailable) as caught:
        asyncio.run(dep.call(hang))
    assert time.perf_counter() - started < 1.0
    assert str(caught.value) == f"{dep.name}: timed out after 0.05 s"
    assert isinstance(caught.value.__cause__, TimeoutError)
    snap = dep.snapshot()
    assert snap["calls"]["timeout"] == 1
    assert snap["consecutive_failures"] == 1
    assert snap["in_flight"] == 0


def test_a_sync_call_that_times_out_raises_counts_and_keeps_running(make: MakeDependency) -> None:
    dep = make(timeout_s=0.05, failure_threshold=1)
    release = threading.Event()
    finished = threading.Event()

    def hang() -> str:
        release.wait(5)
        finished.set()
        return "late"

    started = time.perf_counter()
    with pytest.raises(DependencyUnavailable) as caught:
        dep.call_sync(hang)
    assert time.perf_counter() - started < 1.0
    assert "timed out after 0.05 s" in str(caught.value)
    assert state(dep) is BreakerState.OPEN
    # documented: the timed-out call is still running in its thread and holds its slot
    assert dep.snapshot()["in_flight"] == 1
    assert not finished.is_set()
    release.set()
    dep.close(wait=True)
    assert finished.is_set()
    assert dep.snapshot()["in_flight"] == 0
    assert dep.snapshot()["calls"]["timeout"] == 1


def test_a_timeout_error_raised_by_the_function_is_a_failure_not_a_timeout(
    make: MakeDependency,
) -> None:
    dep = make()

    def raise_timeout() -> str:
        raise TimeoutError("read timed out")

    with pytest.raises(DependencyUnavailable, match="TimeoutError: read timed out"):
        dep.call_sync(raise_timeout)
    assert dep.snapshot()["calls"]["failure"] == 1
    assert dep.snapshot()["calls"]["timeout"] == 0


# -- what counts as a failure -------------------------------------------------------------------


def test_a_failure_is_chained_from_the_original_error(make: MakeDependency, calls: Calls) -> None:
    dep = make()
    with pytest.raises(DependencyUnavailable) as caught:
        dep.call_sync(calls.refuse)
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)
    assert str(caught.value) == f"{dep.name}: ConnectionRefusedError: refused"


def test_dependency_unavailable_is_a_retry_later(make: MakeDependency, calls: Calls) -> None:
    dep = make()
    with pytest.raises(RetryLater):
        dep.call_sync(calls.refuse)
    assert issubclass(DependencyUnavailable, RetryLater)


def test_other_exceptions_propagate_unchanged_and_do_not_count(
    make: MakeDependency, calls: Calls
) -> None:
    dep = make(failure_threshold=1)
    bad_record = ValueError("bad record")

    def buggy() -> str:
        raise bad_record

    async def abuggy() -> str:
        raise bad_record

    with pytest.raises(ValueError, match="bad record") as caught:
        dep.call_sync(buggy)
    assert caught.value is bad_record
    with pytest.raises(ValueError, match="bad record") as caught:
        asyncio.run(dep.call(abuggy))
    assert caught.value is bad_record
    snap = dep.snapshot()
    assert snap["state"] == "closed"
    assert snap["consecutive_failures"] == 0
    assert sum(snap["calls"].values()) == 0


def test_a_non_dependency_error_in_a_probe_frees_the_probe_slot(
    make: MakeDependency, calls: Calls, clock: FakeClock
) -> None:
    dep = make(failure_threshold=1)
    fail_times(dep, calls, 1)
    clock.advance(10.0)

    def buggy() -> str:
        raise KeyError("sku")

    with pytest.raises(KeyError):
        dep.call_sync(buggy)
    assert state(dep) is BreakerState.HALF_OPEN
    assert dep.call_sync(calls.ok) == "ok"  # a new probe is allowed, and it closes
    assert state(dep) is BreakerState.CLOSED


def test_failure_types_decide_what_counts(make: MakeDependency) -> None:
    dep = make(failure_types=(ConnectionError,))

    def lookup_error() -> str:
        raise FileNotFoundError("an OSError, but not listed")

    with pytest.raises(FileNotFoundError):
        dep.call_sync(lookup_error)
    assert dep.snapshot()["calls"]["failure"] == 0


# -- fallback -----------------------------------------------------------------------------------


def test_the_fallback_answers_while_open_with_the_same_arguments(
    make: MakeDependency, calls: Calls
) -> None:
    seen: list[tuple[Any, ...]] = []

    def fallback(*args: Any, **kwargs: Any) -> str:
        seen.append((*args, kwargs))
        return "cached"

    dep = make(failure_threshold=1, fallback=fallback)
    assert dep.call_sync(calls.refuse, "sku-1") == "cached"  # the failure that opens it
    assert state(dep) is BreakerState.OPEN
    assert dep.call_sync(calls.ok, "sku-2", region="eu") == "cached"
    assert calls.count == 1  # the open breaker did not call
    assert seen == [("sku-1", {}), ("sku-2", {"region": "eu"})]
    snap = dep.snapshot()["calls"]
    assert (snap["failure"], snap["rejected"], snap["fallback"]) == (1, 1, 2)


def test_an_async_fallback_is_awaited_on_failure_and_when_open(
    make: MakeDependency, calls: Calls
) -> None:
    async def fallback(sku: str) -> str:
        return f"cached {sku}"

    dep = make(failure_threshold=1, fallback=fallback)

    async def scenario() -> tuple[str, str]:
        return await dep.call(calls.arefuse, "a"), await dep.call(calls.aok, "b")

    assert asyncio.run(scenario()) == ("cached a", "cached b")
    assert calls.count == 1


def test_the_fallback_is_not_used_for_other_exceptions(make: MakeDependency) -> None:
    dep = make(fallback=lambda: "cached")

    def buggy() -> str:
        raise ValueError("bad record")

    with pytest.raises(ValueError, match="bad record"):
        dep.call_sync(buggy)


# -- concurrency --------------------------------------------------------------------------------


def test_async_calls_never_exceed_max_concurrency(make: MakeDependency) -> None:
    dep = make(max_concurrency=3, timeout_s=5.0)
    running = 0
    peak = 0

    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    async def scenario() -> None:
        await asyncio.gather(*(dep.call(work) for _ in range(12)))

    asyncio.run(scenario())
    assert peak == 3
    assert dep.snapshot()["calls"]["success"] == 12


def test_sync_calls_never_exceed_max_concurrency(make: MakeDependency) -> None:
    dep = make(max_concurrency=2, timeout_s=5.0)
    lock = threading.Lock()
    running = 0
    peak = 0

    def work() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.01)
        with lock:
            running -= 1

    threads = [threading.Thread(target=dep.call_sync, args=(work,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 2
    assert dep.snapshot()["calls"]["success"] == 8


def test_waiting_for_a_slot_counts_toward_the_timeout(make: MakeDependency) -> None:
    dep = make(max_concurrency=1, timeout_s=0.1)
    never_called = Calls()

    async def scenario() -> None:
        holder = asyncio.create_task(dep.call(asyncio.Event().wait))
        await asyncio.sleep(0)
        started = time.perf_counter()
        with pytest.raises(DependencyUnavailable, match="timed out"):
            await dep.call(never_called.aok)
        assert time.perf_counter() - started < 1.0
        with pytest.raises(DependencyUnavailable, match="timed out"):
            await holder

    asyncio.run(scenario())
    assert never_called.count == 0
    assert dep.snapshot()["calls"]["timeout"] == 2


def test_a_waiting_sync_call_times_out_when_the_slots_are_taken(make: MakeDependency) -> None:
    dep = make(max_concurrency=1, timeout_s=0.05)
    release = threading.Event()
    with pytest.raises(DependencyUnavailable):
        dep.call_sync(release.wait, 5)  # times out, keeps its slot
    never_called = Calls()
    with pytest.raises(DependencyUnavailable, match="timed out"):
        dep.call_sync(never_called.ok)
    assert never_called.count == 0
    release.set()


def test_each_event_loop_gets_its_own_semaphore(make: MakeDependency) -> None:
    """The runtime calls asyncio.run per batch: a semaphore bound to a finished loop must not be
    reused (asyncio raises 'is bound to a different event loop')."""
    dep = make(max_concurrency=1, timeout_s=5.0)

    async def batch() -> None:
        await asyncio.gather(*(dep.call(asyncio.sleep, 0.001) for _ in range(3)))

    asyncio.run(batch())
    asyncio.run(batch())
    assert dep.snapshot()["calls"]["success"] == 6


def test_concurrent_sync_failures_are_all_counted(make: MakeDependency, calls: Calls) -> None:
    dep = make(failure_threshold=10_000, max_concurrency=4)

    def hammer() -> None:
        for _ in range(50):
            with contextlib.suppress(DependencyUnavailable):
                dep.call_sync(calls.refuse)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snap = dep.snapshot()
    assert snap["consecutive_failures"] == 200
    assert snap["calls"]["failure"] == 200
    assert snap["in_flight"] == 0


# -- metrics, snapshot, logs --------------------------------------------------------------------


def test_metrics_follow_calls_and_state(
    make: MakeDependency, calls: Calls, clock: FakeClock
) -> None:
    dep = make(failure_threshold=1)
    total = "streams_dependency_calls_total"
    gauge = "streams_dependency_breaker_state"
    for outcome in ("success", "failure", "timeout", "rejected", "fallback"):
        assert sample(total, dep, outcome=outcome) == 0
    assert sample(gauge, dep) == 0
    assert sample("streams_dependency_in_flight", dep) == 0

    dep.call_sync(calls.ok)
    fail_times(dep, calls, 1)
    assert sample(gauge, dep) == 2
    fail_times(dep, calls, 1)  # rejected
    clock.advance(10.0)
    assert state(dep) is BreakerState.HALF_OPEN
    assert sample(gauge, dep) == 1
    dep.call_sync(calls.ok)
    assert sample(gauge, dep) == 0

    assert sample(total, dep, outcome="success") == 2
    assert sample(total, dep, outcome="failure") == 1
    assert sample(total, dep, outcome="rejected") == 1
    assert sample("streams_dependency_call_seconds_count", dep) == 3  # rejections not timed
    assert sample("streams_dependency_in_flight", dep) == 0


def test_the_in_flight_gauge_counts_running_calls(make: MakeDependency) -> None:
    dep = make(timeout_s=5.0)

    async def scenario() -> None:
        release = asyncio.Event()
        tasks = [asyncio.create_task(dep.call(release.wait)) for _ in range(2)]
        await asyncio.sleep(0)
        assert sample("streams_dependency_in_flight", dep) == 2
        release.set()
        await asyncio.gather(*tasks)

    asyncio.run(scenario())
    assert sample("streams_dependency_in_flight", dep) == 0


def test_snapshot(make: MakeDependency, calls: Calls) -> None:
    dep = make(failure_threshold=2)
    dep.call_sync(calls.ok)
    fail_times(dep, calls, 1)
    assert dep.snapshot() == {
        "name": dep.name,
        "state": "closed",
        "consecutive_failures": 1,
        "calls": {"success": 1, "failure": 1, "timeout": 0, "rejected": 0, "fallback": 0},
        "in_flight": 0,
    }


def test_every_transition_is_logged_with_the_dependency_name(
    make: MakeDependency, calls: Calls, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    dep = make(failure_threshold=1)
    with caplog.at_level(logging.WARNING, logger="streams.dependency"):
        fail_times(dep, calls, 1)
        clock.advance(10.0)
        dep.call_sync(calls.ok)
    transitions = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(transitions) == 3
    assert all(dep.name in message for message in transitions)
    assert "closed -> open" in transitions[0]
    assert "retry topics" in transitions[0]
    assert "open -> half_open" in transitions[1]
    assert "half_open -> closed" in transitions[2]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout_s": 0},
        {"max_concurrency": 0},
        {"failure_threshold": 0},
        {"open_for_s": -1},
        {"half_open_max_calls": 0},
        {"retry_delay_s": -1},
    ],
)
def test_invalid_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        Dependency("x", **kwargs)
