"""Supervisor restart policy, over fake worker processes and a fake clock."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

import pytest

from streams.runtime import supervisor
from streams.runtime.supervisor import Supervisor, WorkerSlot, exit_reason
from streams.stats import SupervisorReport

EXIT_SCRIPTS: dict[str, list[list[int | None]]] = {}


class FakePopen:
    """A worker process whose poll() results are scripted per stage, one list per spawn."""

    spawned: list[FakePopen] = []  # noqa: RUF012 - reset by the fixture for every test

    def __init__(self, argv: list[str], env: dict[str, str], **_options: object) -> None:
        self.argv = argv
        self.env = env
        self.stage = argv[argv.index("--stage") + 1]
        self.slot = int(argv[argv.index("--slot") + 1])
        scripts = EXIT_SCRIPTS.get(self.stage, [])
        self.polls: list[int | None] = scripts.pop(0) if scripts else [None]
        self.pid = 1000 + len(FakePopen.spawned)
        self.signals: list[int] = []
        self.returncode: int | None = None
        self.wait_timeouts: list[float | None] = []
        FakePopen.spawned.append(self)

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.polls.pop(0) if len(self.polls) > 1 else self.polls[0]
        return self.returncode

    def send_signal(self, signum: int) -> None:
        self.signals.append(signum)
        self.returncode = 0

    def wait(self, timeout: float | None = None) -> int:
        self.wait_timeouts.append(timeout)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        self.returncode = -9


class FakeTime:
    def __init__(self) -> None:
        self.now = 500.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    EXIT_SCRIPTS.clear()
    FakePopen.spawned = []
    monkeypatch.setattr(supervisor, "time", fake)
    monkeypatch.setattr(
        supervisor,
        "subprocess",
        SimpleNamespace(Popen=FakePopen, TimeoutExpired=subprocess.TimeoutExpired),
    )
    installed: list[int] = []
    fake_signal = SimpleNamespace(
        SIGTERM=signal.SIGTERM,
        SIGINT=signal.SIGINT,
        signal=lambda signum, _handler: installed.append(signum),
    )
    monkeypatch.setattr(supervisor, "signal", fake_signal)
    return fake


def started(sup: Supervisor) -> WorkerSlot:
    (worker,) = sup.slots
    sup._spawn(worker)
    return worker


def process_of(worker: WorkerSlot) -> object:
    """The worker's process, read afresh (mypy would keep an earlier narrowing)."""
    return worker.process


def test_spawn_runs_the_worker_module_for_the_stage_and_slot(clock: FakeTime) -> None:
    sup = Supervisor("app:pipeline", ["validate"], workers=2, log_format="json")

    for worker in sup.slots:
        sup._spawn(worker)

    assert [w.name for w in sup.slots] == ["validate/0", "validate/1"]
    argv = FakePopen.spawned[1].argv
    assert argv[1:] == [
        "-m",
        "streams.runtime.worker",
        "app:pipeline",
        "--stage",
        "validate",
        "--slot",
        "1",
        "--log-format",
        "json",
    ]
    assert sup.slots[1].started_at == 500.0


def test_a_running_worker_is_left_alone(clock: FakeTime) -> None:
    sup = Supervisor("app:p", ["s"])
    worker = started(sup)

    sup._tick()

    assert worker.process is not None
    assert worker.history == []
    assert worker.restart_at is None


@pytest.mark.parametrize("code", [1, -9, -15])
def test_a_crash_or_a_signal_schedules_a_restart_after_the_backoff(
    clock: FakeTime, code: int
) -> None:
    EXIT_SCRIPTS["s"] = [[code]]
    sup = Supervisor("app:p", ["s"])
    worker = started(sup)

    sup._tick()

    assert worker.process is None
    assert worker.history == [code]
    assert worker.restarts == 1
    assert worker.restart_at == 501.0
    assert worker.backoff_s == 2.0
    assert worker.final_code is None


def test_the_restart_happens_only_once_the_backoff_has_passed(clock: FakeTime) -> None:
    EXIT_SCRIPTS["s"] = [[1]]
    sup = Supervisor("app:p", ["s"])
    worker = started(sup)
    sup._tick()

    clock.now = 500.9
    sup._tick()
    assert worker.process is None
    assert len(FakePopen.spawned) == 1

    clock.now = 501.0
    sup._tick()
    assert len(FakePopen.spawned) == 2
    assert process_of(worker) is FakePopen.spawned[1]
    assert worker.restart_at is None
    assert worker.started_at == 501.0


def test_backoff_doubles_and_is_capped_at_30_seconds(clock: FakeTime) -> None:
    EXIT_SCRIPTS["s"] = [[1] for _ in range(8)]
    sup = Supervisor("app:p", ["s"])
    worker = started(sup)
    delays = []

    for _ in range(8):
        sup._tick()  # the worker crashes
        assert worker.restart_at is not None
        delays.append(worker.restart_at - clock.now)
        clock.now = worker.restart_at
        sup._tick()  # and is started again

    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert worker.restarts == 8
    assert worker.history == [1] * 8


def test_backoff_resets_after_a_minute_of_healthy_running(clock: FakeTime) -> None:
    EXIT_SCRIPTS["s"] = [[1], [1], [None, 1]]
    sup = Supervisor("app:p", ["s"])
    worker = started(sup)
    for _ in range(2):
        sup._tick()
        assert worker.restart_at is not None
        clock.now = worker.restart_at
        sup._tick()
    assert worker.backoff_s == 4.0

    clock.now += 60.5
    sup._tick()  # still running, and healthy for more than 60 s
    assert worker.backoff_s == 1.0

    sup._tick()  # now it crashes
    assert worker.restart_at == clock.now + 1.0


@pytest.mark.parametrize("code", [3, 4, 5])
def test_a_worker_that_needs_an_operator_is_not_restarted(clock: FakeTime, code: int) -> None:
    EXIT_SCRIPTS["s"] = [[code]]
    sup = Supervisor("app:p", ["s"])
    worker = started(sup)

    sup._tick()
    clock.now += 1000
    sup._tick()

    assert worker.final_code == code
    assert worker.restart_at is None
    assert worker.restarts == 0
    assert worker.history == [code]
    assert len(FakePopen.spawned) == 1


def test_a_clean_exit_is_final_and_not_restarted(clock: FakeTime) -> None:
    EXIT_SCRIPTS["s"] = [[0]]
    sup = Supervisor("app:p", ["s"])
    worker = started(sup)

    sup._tick()

    assert worker.final_code == 0
    assert worker.restart_at is None


def run_with(clock: FakeTime, scripts: dict[str, list[list[int | None]]]) -> Callable[[], int]:
    EXIT_SCRIPTS.update(scripts)
    sup = Supervisor("app:p", list(scripts))
    return sup.run


def test_run_returns_the_first_non_zero_final_code(clock: FakeTime) -> None:
    run = run_with(clock, {"a": [[None, 0]], "b": [[1], [None, None, 4]], "c": [[3]]})

    assert run() == 4
    stages = [p.stage for p in FakePopen.spawned]
    assert sorted(stages) == ["a", "b", "b", "c"]


def test_run_returns_zero_when_every_worker_ends_cleanly(clock: FakeTime) -> None:
    run = run_with(clock, {"a": [[0]], "b": [[1], [0]]})

    assert run() == 0
    assert len(FakePopen.spawned) == 3


def test_run_stops_running_workers_when_asked(clock: FakeTime) -> None:
    EXIT_SCRIPTS["a"] = [[None]]
    sup = Supervisor("app:p", ["a"])
    sup.request_stop()

    assert sup.run() == 0
    (process,) = FakePopen.spawned
    assert process.signals == [signal.SIGTERM]
    assert process.wait_timeouts == [35.0]
    assert sup.slots[0].final_code == 0


# -- what the supervisor publishes to _streams.stats -----------------------------------------


class FakePublisher:
    """Records what the supervisor sends; ``fail`` makes every send raise."""

    def __init__(self, on_send: Callable[[], None] | None = None, *, fail: bool = False) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.closed: list[float] = []
        self.on_send = on_send
        self.fail = fail

    def send(self, key: str, value: Mapping[str, Any]) -> None:
        if self.fail:
            raise BufferError("queue full")
        self.sent.append((key, dict(value)))
        if self.on_send is not None:
            self.on_send()

    def close(self, timeout_s: float = 2.0) -> None:
        self.closed.append(timeout_s)

    def slots(self, n: int) -> list[tuple[str, int | None, str]]:
        """(state, exit_code, reason) of each slot in the n-th record."""
        return [(s["state"], s["exit_code"], s["reason"]) for s in self.sent[n][1]["slots"]]


def publishing(publisher: FakePublisher, **options: Any) -> Supervisor:
    return Supervisor(
        "app:p",
        ["s"],
        workers=2,
        groups={"s": "p.s"},
        publisher=publisher,
        wall_clock=lambda: 1_700_000_000.0,
        **options,
    )


def test_the_record_names_the_group_the_slots_and_who_supervises(clock: FakeTime) -> None:
    EXIT_SCRIPTS["s"] = [[None], [None]]
    publisher = FakePublisher()
    sup = publishing(publisher)
    for worker in sup.slots:
        sup._spawn(worker)

    sup.publish(force=True)

    ((key, value),) = publisher.sent
    host, pid = socket.gethostname(), os.getpid()
    assert key == f"p.s/supervisor@{host}:{pid}"
    assert value == {
        "kind": "supervisor",
        "group": "p.s",
        "desired": 2,
        "running": 2,
        "slots": [
            {"slot": 0, "state": "running", "exit_code": None, "restarts": 0, "reason": ""},
            {"slot": 1, "state": "running", "exit_code": None, "restarts": 0, "reason": ""},
        ],
        "ts_ms": 1_700_000_000_000,
        "host": host,
        "pid": pid,
        "state": "running",
        "interval_s": 5.0,
    }
    assert SupervisorReport.parse(value) == sup.reports()[0]


def test_every_change_is_published_at_once_and_a_final_record_says_exited(
    clock: FakeTime,
) -> None:
    # slot 0 crashes once, is restarted, then ends cleanly; slot 1 cannot start (exit 5)
    EXIT_SCRIPTS["s"] = [[None, None, 1], [None, 5], [None] * 40 + [0]]
    publisher = FakePublisher()

    assert publishing(publisher).run() == 5

    states = [[s for s, _, _ in publisher.slots(n)] for n in range(len(publisher.sent))]
    assert states[0] == ["running", "running"]  # at start
    assert ["running", "down"] in states
    assert ["restarting", "down"] in states
    assert publisher.slots(states.index(["restarting", "down"]))[0] == (
        "restarting",
        1,
        "exited 1 (crashed), restarting in 1 s",
    )
    assert publisher.slots(states.index(["running", "down"]))[1] == (
        "down",
        5,
        "exited 5 (cannot start)",
    )
    final = publisher.sent[-1][1]
    assert (final["state"], final["desired"], final["running"]) == ("exited", 2, 0)
    assert publisher.closed == [2.0]


def test_a_requested_stop_ends_with_a_stopped_record_of_desired_zero(clock: FakeTime) -> None:
    EXIT_SCRIPTS["s"] = [[None], [None]]
    publisher = FakePublisher()
    sup = publishing(publisher)
    publisher.on_send = sup.request_stop

    assert sup.run() == 0

    final = publisher.sent[-1][1]
    assert (final["state"], final["desired"], final["running"]) == ("stopped", 0, 0)
    assert [s["reason"] for s in final["slots"]] == ["exited 0 (stopped)"] * 2


def test_without_changes_a_record_goes_out_once_per_interval(clock: FakeTime) -> None:
    EXIT_SCRIPTS["s"] = [[None], [None]]
    sent_at: list[float] = []
    publisher = FakePublisher(on_send=lambda: sent_at.append(clock.now))
    sup = publishing(publisher, publish_interval_s=5.0)
    for worker in sup.slots:
        sup._spawn(worker)
    sup.publish(force=True)
    while clock.now < 530:  # 30 s of 0.2 s turns, nothing changes
        sup.publish(force=sup._tick())
        clock.sleep(0.2)
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    assert len(gaps) >= 5
    assert all(5.0 <= gap < 5.0 + 0.2 + 1e-6 for gap in gaps), gaps  # at most one turn late


def test_a_failing_publisher_never_stops_the_supervisor(clock: FakeTime) -> None:
    EXIT_SCRIPTS["s"] = [[None, 1], [None, 0], [None, 0]]
    publisher = FakePublisher(fail=True)

    assert publishing(publisher).run() == 0  # every worker supervised to its end

    assert len(FakePopen.spawned) == 3  # the crashed slot was restarted
    assert publisher.closed == [2.0]


def test_no_publisher_no_records(clock: FakeTime) -> None:
    EXIT_SCRIPTS["s"] = [[0]]
    assert Supervisor("app:p", ["s"]).run() == 0  # publisher None: nothing to send to


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (0, "exited 0 (stopped)"),
        (1, "exited 1 (crashed)"),
        (3, "exited 3 (stopped on a record)"),
        (4, "exited 4 (fenced)"),
        (5, "exited 5 (cannot start)"),
        (-9, "killed by SIGKILL"),
        (7, "exited 7 (unknown exit code)"),
    ],
)
def test_exit_reasons_name_the_worker_exit_codes(code: int, reason: str) -> None:
    assert exit_reason(code) == reason
