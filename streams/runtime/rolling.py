"""A rolling restart (``kill -HUP <supervisor pid>``): one worker at a time, none lost.

For each worker in turn: SIGTERM (it drains the batch in flight, commits and exits 0), start
its successor on the same slot at once (same ``transactional.id``: nothing to wait for), wait
until the successor's ``/readyz`` answers 200 (joined its group, producer initialised), then
the next worker. The other workers keep running meanwhile; the stopping worker's partitions
move to them and back. This is how a new version of a stage's code is deployed while the
pipeline runs: the successor imports the module afresh.

A worker that does not stop within the drain deadline is killed (its open transaction is
aborted by its successor's ``init_transactions()``). A worker that exits with anything but 0
while it drains, or a successor that is not ready within ``ready_timeout_s``, ends the roll
(logged as an error); the supervisor then treats that worker as it treats any exit.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Rollable", "RollingRestart"]

log = logging.getLogger("streams.supervisor")

# How long a successor may take to join its group: a rebalance with a slow member can take a
# session timeout or two; past this the roll stops rather than stop the next worker.
_READY_TIMEOUT_S = 120.0
# On top of the worker's own drain deadline before it is killed: its stop takes a moment.
_KILL_GRACE_S = 5.0


class Rollable(Protocol):
    """What the roll needs of a supervised worker (``streams.runtime.supervisor.WorkerSlot``)."""

    @property
    def name(self) -> str: ...

    def running(self) -> bool:
        """Its process runs (not ended, not waiting to be restarted)."""
        ...

    def poll(self) -> int | None:
        """The exit code if its process ended, else None."""
        ...

    def send_signal(self, sig: int) -> None: ...


@dataclass
class _Step:
    worker: Rollable
    phase: str  # "draining" or "starting"
    since: float


class RollingRestart:
    """Drives one roll over ``workers``; the supervisor calls ``step()`` on every turn."""

    def __init__(
        self,
        workers: list[Rollable],
        *,
        drain_deadline_s: float,
        respawn: Callable[[Rollable], None],
        ready: Callable[[Rollable], bool],
        ready_timeout_s: float = _READY_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._queue = list(workers)
        self._drain_deadline_s = drain_deadline_s
        self._respawn = respawn
        self._ready = ready
        self._ready_timeout_s = ready_timeout_s
        self._clock = clock
        self._step: _Step | None = None
        self.done = False
        self.failed: str | None = None
        self.owned: Rollable | None = None  # the worker whose exit the roll handles itself

    def step(self) -> None:
        """Advance the roll as far as it can without blocking."""
        if self.done:
            return
        now = self._clock()
        if self._step is None:
            self._stop_next(now)
        elif self._step.phase == "draining":
            self._drain(self._step, now)
        else:
            self._await_ready(self._step, now)

    def _stop_next(self, now: float) -> None:
        if not self._queue:
            self.done = True
            self.owned = None
            log.info("rolling restart finished")
            return
        worker = self._queue.pop(0)
        if not worker.running():
            return  # not running (restarting after a crash, or ended): nothing to roll
        log.info("rolling restart: stopping worker", extra={"worker": worker.name})
        worker.send_signal(signal.SIGTERM)
        self.owned = worker
        self._step = _Step(worker, "draining", now)

    def _drain(self, current: _Step, now: float) -> None:
        code = current.worker.poll()
        if code is None:
            if now - current.since > self._drain_deadline_s + _KILL_GRACE_S:
                log.error(
                    "rolling restart: worker did not drain in time; killing it",
                    extra={"worker": current.worker.name},
                )
                current.worker.send_signal(signal.SIGKILL)
            return
        if code not in (0, -signal.SIGKILL):
            self._fail(f"worker {current.worker.name} exited {code} while draining")
            return
        self._respawn(current.worker)
        self.owned = None
        self._step = _Step(current.worker, "starting", now)

    def _await_ready(self, current: _Step, now: float) -> None:
        if current.worker.poll() is not None:
            self._fail(f"the new worker {current.worker.name} ended before it was ready")
        elif self._ready(current.worker):
            log.info(
                "rolling restart: worker ready",
                extra={"worker": current.worker.name, "after_s": round(now - current.since, 1)},
            )
            self._step = None
        elif now - current.since > self._ready_timeout_s:
            self._fail(
                f"the new worker {current.worker.name} was not ready within "
                f"{self._ready_timeout_s:.0f} s"
            )

    def _fail(self, reason: str) -> None:
        log.error("rolling restart stopped: %s", reason, extra={"hint": "see the worker's log"})
        self.failed = reason
        self.done = True
        self.owned = None
        self._step = None
