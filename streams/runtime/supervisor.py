"""Run worker processes for one or more stages, restart the ones that crash, stop them cleanly.

A worker that crashes (exit 1 or killed by a signal) is restarted with exponential backoff
(1 s doubling to 30 s; back to 1 s after 60 s of healthy running). A worker that stops on a
record it cannot process (exit 3), is fenced (4) or cannot start (5) is not restarted: that
needs an operator, and restarting would loop. SIGTERM to the supervisor is passed to every
worker, which drains and commits; workers still running after the deadline are killed.

**Seen from the monitor.** Given a publisher, the supervisor writes one ``SupervisorReport``
per stage group to ``_streams.stats`` (``streams.stats`` has the shape) every
``publish_interval_s`` and at once whenever a slot changes (crash, restart, final exit), then a
last one when it stops: ``stopped`` with ``desired`` 0 after a requested stop, so that a clean
stop is no alarm. The monitor and ``streams lag --pipeline`` show a stage below its desired
worker count from these. Publishing is best effort: the producer only queues (it never blocks
the loop), errors are logged once, and the last flush waits at most 2 s.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from signal import Signals
from types import FrameType
from typing import Any, Protocol

from streams.runtime.worker import (
    EXIT_CRASHED,
    EXIT_FENCED,
    EXIT_OK,
    EXIT_START_FAILED,
    EXIT_STOPPED_ON_RECORD,
)
from streams.stats import SlotReport, SupervisorReport

__all__ = ["RecordPublisher", "Supervisor", "WorkerSlot", "exit_reason"]

log = logging.getLogger("streams.supervisor")

_BACKOFF_START_S = 1.0
_BACKOFF_MAX_S = 30.0
_HEALTHY_AFTER_S = 60.0
# the monitor drops a record older than 3 intervals: 5 s keeps a live supervisor within 15 s,
# a few small records per stage, nothing next to the workers' own stats
_PUBLISH_INTERVAL_S = 5.0

_EXIT_REASONS = {
    EXIT_OK: "stopped",
    EXIT_CRASHED: "crashed",
    EXIT_STOPPED_ON_RECORD: "stopped on a record",
    EXIT_FENCED: "fenced",
    EXIT_START_FAILED: "cannot start",
}


def exit_reason(code: int) -> str:
    """``exited 5 (cannot start)``, ``killed by SIGKILL``: what ended a worker, for operators."""
    if code < 0:
        try:
            return f"killed by {Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited {code} ({_EXIT_REASONS.get(code, 'unknown exit code')})"


class RecordPublisher(Protocol):
    """Where the supervisor's records go (``streams.runtime.publish.StatsPublisher``)."""

    def send(self, key: str, value: Mapping[str, Any]) -> None: ...

    def close(self, timeout_s: float = 2.0) -> None: ...


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker if the supervisor dies (even by SIGKILL), so none is orphaned."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        return  # not Linux: a supervisor killed with SIGKILL leaves its workers running


_PR_SET_PDEATHSIG = 1


@dataclass
class WorkerSlot:
    stage: str
    slot: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = _BACKOFF_START_S
    restart_at: float | None = None
    final_code: int | None = None
    history: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.stage}/{self.slot}"


class Supervisor:
    """Keeps ``workers`` processes per stage running until stopped."""

    def __init__(
        self,
        reference: str,
        stages: list[str],
        *,
        workers: int = 1,
        log_format: str = "text",
        shutdown_deadline_s: float = 35.0,
        groups: Mapping[str, str] | None = None,
        publisher: RecordPublisher | None = None,
        publish_interval_s: float = _PUBLISH_INTERVAL_S,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.reference = reference
        self.stages = list(stages)
        self.slots = [WorkerSlot(stage, slot) for stage in stages for slot in range(workers)]
        self.log_format = log_format
        self.shutdown_deadline_s = shutdown_deadline_s
        # stage -> its consumer group (the record's key and group); the stage name without one
        self.groups = dict(groups or {})
        self.publisher = publisher
        self.publish_interval_s = publish_interval_s
        self._wall_clock = wall_clock
        self._host = socket.gethostname()
        self._published_at: float | None = None
        self._publish_warned = False
        self._stopping = False

    def _spawn(self, worker: WorkerSlot) -> None:
        argv = [
            sys.executable,
            "-m",
            "streams.runtime.worker",
            self.reference,
            "--stage",
            worker.stage,
            "--slot",
            str(worker.slot),
            "--log-format",
            self.log_format,
        ]
        worker.process = subprocess.Popen(
            argv,
            env=dict(os.environ),
            # its own process group: a Ctrl-C in the terminal reaches only the supervisor,
            # which then sends each worker exactly one SIGTERM (a second one means "abort")
            process_group=0,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl only, no locks or threads
        )
        worker.started_at = time.monotonic()
        worker.restart_at = None
        log.info("worker started", extra={"worker": worker.name, "pid": worker.process.pid})

    def request_stop(self, *_args: object) -> None:
        self._stopping = True

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT or until every worker has ended; returns an exit code."""

        def on_signal(_signum: int, _frame: FrameType | None) -> None:
            self.request_stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        for worker in self.slots:
            self._spawn(worker)
        self.publish(force=True)
        while not self._stopping:
            self.publish(force=self._tick())
            if all(w.final_code is not None for w in self.slots):
                break
            time.sleep(0.2)
        requested = self._stopping
        self._stop_all()
        codes = [w.final_code for w in self.slots if w.final_code not in (None, EXIT_OK)]
        self.publish(force=True, final="stopped" if requested or not codes else "exited")
        if self.publisher is not None:
            self.publisher.close(2.0)
        return codes[0] if codes else EXIT_OK

    # -- what the monitor sees ---------------------------------------------------------------

    def reports(self, final: str | None = None) -> list[SupervisorReport]:
        """One report per stage group; ``final``: ``stopped`` (desired 0) or ``exited``."""
        now = time.monotonic()
        ts_ms = int(self._wall_clock() * 1000)
        found = []
        for stage in self.stages:
            slots = tuple(self._slot_report(w, now) for w in self.slots if w.stage == stage)
            found.append(
                SupervisorReport(
                    group=self.groups.get(stage, stage),
                    desired=0 if final == "stopped" else len(slots),
                    running=sum(1 for s in slots if s.state == "running"),
                    slots=slots,
                    ts_ms=ts_ms,
                    host=self._host,
                    pid=os.getpid(),
                    state=final or "running",
                    interval_s=self.publish_interval_s,
                )
            )
        return found

    @staticmethod
    def _slot_report(worker: WorkerSlot, now: float) -> SlotReport:
        if worker.process is not None and worker.final_code is None:
            return SlotReport(worker.slot, "running", None, worker.restarts)
        code = worker.final_code
        if code is None and worker.history:
            code = worker.history[-1]
        if worker.final_code is None and worker.restart_at is not None and code is not None:
            wait = max(0.0, worker.restart_at - now)
            reason = f"{exit_reason(code)}, restarting in {wait:.0f} s"
            return SlotReport(worker.slot, "restarting", code, worker.restarts, reason)
        reason = exit_reason(code) if code is not None else "not started"
        return SlotReport(worker.slot, "down", code, worker.restarts, reason)

    def publish(self, *, force: bool = False, final: str | None = None) -> None:
        """Send the reports if something changed or an interval passed; never raises."""
        if self.publisher is None:
            return
        now = time.monotonic()
        due = self._published_at is None or now - self._published_at >= self.publish_interval_s
        if not (force or due):
            return
        self._published_at = now
        try:
            for report in self.reports(final):
                self.publisher.send(report.key, report.to_json())
        except Exception:
            if not self._publish_warned:
                self._publish_warned = True
                log.warning("cannot publish the supervisor's state", exc_info=True)

    # -- supervision -------------------------------------------------------------------------

    def _tick(self) -> bool:
        """Restart what is due and reap what ended; True if a slot changed state."""
        now = time.monotonic()
        changed = False
        for worker in self.slots:
            if worker.final_code is not None:
                continue
            if worker.process is None:
                if worker.restart_at is not None and now >= worker.restart_at:
                    self._spawn(worker)
                    changed = True
                continue
            code = worker.process.poll()
            if code is None:
                if now - worker.started_at > _HEALTHY_AFTER_S:
                    worker.backoff_s = _BACKOFF_START_S
                continue
            changed = True
            worker.history.append(code)
            worker.process = None
            if code == EXIT_CRASHED or code < 0:
                worker.restarts += 1
                worker.restart_at = now + worker.backoff_s
                log.warning(
                    "worker ended; restarting",
                    extra={"worker": worker.name, "exit_code": code, "in_s": worker.backoff_s},
                )
                worker.backoff_s = min(worker.backoff_s * 2, _BACKOFF_MAX_S)
            else:
                worker.final_code = code
                level = logging.INFO if code == EXIT_OK else logging.ERROR
                log.log(
                    level,
                    "worker ended; not restarting",
                    extra={"worker": worker.name, "exit_code": code},
                )
        return changed

    def _stop_all(self) -> None:
        running = [w for w in self.slots if w.process is not None and w.process.poll() is None]
        for worker in running:
            assert worker.process is not None  # noqa: S101
            worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.shutdown_deadline_s
        for worker in running:
            assert worker.process is not None  # noqa: S101
            try:
                code = worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                # the timeout is the news here, not its traceback
                log.error("worker did not stop in time; killing it", extra={"worker": worker.name})  # noqa: TRY400
                worker.process.kill()
                code = worker.process.wait()
            worker.final_code = code if worker.final_code is None else worker.final_code
            log.info("worker stopped", extra={"worker": worker.name, "exit_code": code})
