"""Before a stage worker creates its transactional producer: is its slot already running?

A worker that called ``init_transactions()`` with a slot's ``transactional.id`` fences the
worker that had it. If that worker is alive, fencing it is a loss (it exits 4 and its batch is
processed again); so a starting worker first looks at its group: a *live twin* there (another
process on the same slot) makes it refuse to start (``TwinRunningError``, exit 4), and
``--take-over`` skips the look.

**What is a live twin.** Every worker's consumer has the client.id
``<group>.<slot>#<incarnation>``, the incarnation ``<start ms>-<pid>-<random>@<host>`` (host:
``$HOSTNAME``, else the machine's name). A member on our slot with another incarnation is
either a live twin or a *predecessor*: a worker that ended (SIGKILL, a crash, a clean stop
with static membership, which sends no LeaveGroup) and is listed until its session times out
(``session.timeout.ms``). A restarted worker must take over from its predecessor at once: its
``init_transactions()`` aborts the predecessor's open transaction, so that read_committed
readers do not wait for ``transaction.timeout.ms``; that is the point of a stable slot. The
group cannot tell the two apart (a static member keeps its membership without a LeaveGroup; a
dead member's last heartbeat is not shown), so the rule is:

- **same host** (the slot's home: a StatefulSet pod name, a systemd host, one machine): the
  member is live if a process with its pid runs here and started no later than the member's
  incarnation (so a pid reused by a later process, or our own pid in a restarted container,
  is not it). Decided at once, so a restart after SIGKILL takes over within a second.
- **another host**: nothing local can be asked, so the broker decides: the member is a
  predecessor if it leaves the group within our ``session.timeout.ms`` (plus a margin), and a
  live twin if it is still listed then. A restart on a new host waits that long.
- a client.id without our incarnation format (an older release): a live twin.

The caveat: two hosts that share one hostname (two containers both given ``hostname: x``)
look like one home; each deployment the project generates gives each slot its own hostname.
Workers started within the same second can all find an empty group; the fencing path in
``streams.stage.recovery`` then stops the older ones (exit 4).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streams.config import KafkaSettings
from streams.exceptions import FencedError

__all__ = [
    "Incarnation",
    "TwinRunningError",
    "classify",
    "local_host",
    "process_started_at",
    "refuse_live_twin",
]

log = logging.getLogger("streams.stage")

# Between a slot's client.id and the incarnation, and before the host in the incarnation.
_INCARNATION_SEP = "#"
_HOST_SEP = "@"
# A process start time read from /proc is whole clock ticks after a boot time in whole
# seconds: a process is the member's only if it started within this of its incarnation.
_START_TOLERANCE_S = 1.0
# On top of the session timeout: the coordinator checks expired sessions on a timer.
_SESSION_MARGIN_S = 3.0
_LOOK_EVERY_S = 1.0

Verdict = Literal["self", "other-slot", "predecessor", "twin", "ask-the-broker"]


class TwinRunningError(FencedError):
    """Another live worker runs this slot: this one does not start (exit 4)."""

    default_hint = (
        "each slot runs once: give this worker another --slot, or stop the other one; "
        "--take-over starts anyway and fences it"
    )


def local_host() -> str:
    """The name of this worker's home: ``$HOSTNAME`` (a pod's name), else the machine's."""
    return os.environ.get("HOSTNAME") or socket.gethostname()


@dataclass(frozen=True)
class Incarnation:
    """One worker process's mark, as it ends its consumer's client.id."""

    started_ms: int
    pid: int
    host: str | None

    @classmethod
    def parse(cls, text: str) -> Incarnation | None:
        """``<start ms>-<pid>-<random>[@<host>]``; None for anything else."""
        mark, _, host = text.partition(_HOST_SEP)
        parts = mark.split("-")
        if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()):  # noqa: PLR2004
            return None
        return cls(int(parts[0]), int(parts[1]), host or None)


def process_started_at(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds) on this machine; None if there is none.

    Linux: from /proc (boot time plus the start tick), so a reused pid shows a later start;
    a zombie (SIGKILLed, not reaped yet) is no process.
    Elsewhere: the process exists (start unknown: 0.0), or None.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except FileNotFoundError:
        return None
    except (OSError, StopIteration):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return 0.0
        return 0.0
    # "pid (comm) state ppid ...": comm may hold spaces; starttime is field 22
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None  # a killed process not reaped yet (its parent died too): not running
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def classify(
    client_id: str,
    *,
    slot_prefix: str,
    mine: Incarnation,
    mine_text: str,
    started_at: Callable[[int], float | None] = process_started_at,
) -> Verdict:
    """What a group member with ``client_id`` is to a worker starting as ``mine``."""
    if not client_id.startswith(slot_prefix):
        return "other-slot"
    text = client_id[len(slot_prefix) :]
    if text == mine_text:
        return "self"
    theirs = Incarnation.parse(text)
    if theirs is None:
        return "twin"
    if theirs.host != mine.host:
        return "ask-the-broker"
    return "twin" if _runs_here(theirs, mine, started_at) else "predecessor"


def _runs_here(
    theirs: Incarnation, mine: Incarnation, started_at: Callable[[int], float | None]
) -> bool:
    """The member's process still runs on this host (not a later process with its pid)."""
    if theirs.pid == mine.pid:
        return False  # our own pid: a restarted container reusing pids
    started = started_at(theirs.pid)
    return started is not None and started <= theirs.started_ms / 1000 + _START_TOLERANCE_S


def refuse_live_twin(
    kafka: KafkaSettings,
    *,
    group_id: str,
    client_id: str,
    session_timeout_ms: int,
    admin_factory: Callable[[dict[str, Any]], Any] = AdminClient,
    started_at: Callable[[int], float | None] = process_started_at,
) -> None:
    """Raise ``TwinRunningError`` if a live worker runs this slot (see the module's rule).

    ``client_id`` is this worker's consumer client.id, ``<group>.<slot>#<incarnation>``. A
    group that cannot be described (Kafka unreachable) is no twin: the worker's own start-up
    then reports the broker.
    """
    slot, _, mine_text = client_id.partition(_INCARNATION_SEP)
    prefix = f"{slot}{_INCARNATION_SEP}"
    mine = Incarnation.parse(mine_text)
    if mine is None:
        return
    admin = admin_factory(kafka.client_config())
    waited_for: dict[str, str] = {}  # other hosts' members still listed: client.id -> host
    deadline = time.monotonic() + session_timeout_ms / 1000 + _SESSION_MARGIN_S
    while True:
        members = _members(admin, group_id)
        if members is None:
            return
        verdicts = {
            (member_client_id, host): classify(
                member_client_id,
                slot_prefix=prefix,
                mine=mine,
                mine_text=mine_text,
                started_at=started_at,
            )
            for member_client_id, host in members
        }
        for (member_client_id, host), verdict in verdicts.items():
            if verdict == "twin":
                _refuse(group_id, slot, member_client_id, host, "runs on this host")
        remote = dict(key for key, verdict in verdicts.items() if verdict == "ask-the-broker")
        if not remote:
            if waited_for:
                log.info("the worker listed on this slot left the group: taking over")
            return
        if not waited_for:
            log.info(
                "a worker on another host is listed on this slot (%s); waiting up to %.0f s "
                "for its session to time out (a live worker stays listed)",
                ", ".join(remote),
                deadline - time.monotonic(),
            )
        waited_for = remote
        if time.monotonic() > deadline:
            member_client_id, host = next(iter(remote.items()))
            _refuse(group_id, slot, member_client_id, host, "is still in the group")
        time.sleep(_LOOK_EVERY_S)


def _members(admin: Any, group_id: str) -> list[tuple[str, str]] | None:
    """(client.id, host) of each member of the group; None if the group cannot be described."""
    try:
        futures = admin.describe_consumer_groups([group_id], request_timeout=10)
        description = futures[group_id].result(timeout=15)
    except KafkaException:
        log.debug("describe_consumer_groups failed; no twin check", exc_info=True)
        return None
    found: Iterable[Any] = description.members or []
    return [(m.client_id or "", str(m.host or "")) for m in found]


def _refuse(group_id: str, slot: str, client_id: str, host: str, where: str) -> None:
    raise TwinRunningError(
        f"stage {group_id}: slot {slot.rsplit('.', 1)[-1]} already runs: member "
        f"{client_id} at {host.lstrip('/') or 'an unknown address'} {where}; "
        "not starting (the live worker keeps the slot)"
    )
