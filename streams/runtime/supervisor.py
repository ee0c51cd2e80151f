"""Run worker processes for one or more stages, restart the ones that crash, stop them cleanly.

A worker that crashes (exit 1 or killed by a signal) is restarted with exponential backoff
(1 s doubling to 30 s; back to 1 s after 60 s of healthy running). A worker that stops on a
record it cannot process (exit 3), is fenced (4) or cannot start (5) is not restarted: that
needs an operator, and restarting would loop. SIGTERM to the supervisor is passed to every
worker, which drains and commits; workers still running after the deadline are killed.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

from streams.runtime.worker import EXIT_CRASHED, EXIT_OK

__all__ = ["Supervisor", "WorkerSlot"]

log = logging.getLogger("streams.supervisor")

_BACKOFF_START_S = 1.0
_BACKOFF_MAX_S = 30.0
_HEALTHY_AFTER_S = 60.0


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
    ) -> None:
        self.reference = reference
        self.slots = [WorkerSlot(stage, slot) for stage in stages for slot in range(workers)]
        self.log_format = log_format
        self.shutdown_deadline_s = shutdown_deadline_s
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
        while not self._stopping:
            self._tick()
            if all(w.final_code is not None for w in self.slots):
                break
            time.sleep(0.2)
        self._stop_all()
        codes = [w.final_code for w in self.slots if w.final_code not in (None, EXIT_OK)]
        return codes[0] if codes else EXIT_OK

    def _tick(self) -> None:
        now = time.monotonic()
        for worker in self.slots:
            if worker.final_code is not None:
                continue
            if worker.process is None:
                if worker.restart_at is not None and now >= worker.restart_at:
                    self._spawn(worker)
                continue
            code = worker.process.poll()
            if code is None:
                if now - worker.started_at > _HEALTHY_AFTER_S:
                    worker.backoff_s = _BACKOFF_START_S
                continue
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
