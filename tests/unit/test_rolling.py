"""The rolling restart's steps over fake workers: one at a time, ready before the next."""

from __future__ import annotations

import signal

from streams.runtime.rolling import Rollable, RollingRestart


class FakeWorker:
    def __init__(self, name: str) -> None:
        self.name = name
        self.code: int | None = None
        self.signals: list[int] = []
        self.ready = False
        self.spawns = 0

    def running(self) -> bool:
        return self.code is None

    def poll(self) -> int | None:
        return self.code

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)


def owned(r: RollingRestart) -> Rollable | None:
    return r.owned  # read afresh (mypy keeps an earlier narrowing)


def roll(workers: list[FakeWorker], now: list[float]) -> RollingRestart:
    def respawn(worker: Rollable) -> None:
        assert isinstance(worker, FakeWorker)
        worker.code, worker.ready = None, False
        worker.spawns += 1

    def ready(worker: Rollable) -> bool:
        assert isinstance(worker, FakeWorker)
        return worker.ready

    return RollingRestart(
        list(workers), drain_deadline_s=30, respawn=respawn, ready=ready, clock=lambda: now[0]
    )


def test_each_worker_drains_restarts_and_is_ready_before_the_next_is_stopped() -> None:
    a, b = FakeWorker("s/0"), FakeWorker("s/1")
    now = [0.0]
    r = roll([a, b], now)
    r.step()
    assert a.signals == [signal.SIGTERM]
    assert owned(r) is a
    r.step()  # still draining
    assert b.signals == []
    a.code = 0
    r.step()  # drained: its successor starts at once
    assert a.spawns == 1
    assert owned(r) is None
    r.step()
    assert b.signals == []  # a's successor is not ready yet
    a.ready = True
    r.step()
    r.step()
    assert b.signals == [signal.SIGTERM]
    b.code = 0
    r.step()
    b.ready = True
    r.step()
    r.step()
    assert r.done
    assert r.failed is None


def test_a_worker_that_does_not_drain_is_killed_and_a_failed_drain_stops_the_roll() -> None:
    a, b = FakeWorker("s/0"), FakeWorker("s/1")
    now = [0.0]
    r = roll([a, b], now)
    r.step()
    now[0] = 40.0
    r.step()
    assert a.signals == [signal.SIGTERM, signal.SIGKILL]
    a.code = 3
    r.step()
    assert r.done
    assert r.failed is not None
    assert "exited 3" in r.failed
    assert b.signals == []
