"""Per-process measurements read from /proc: RSS (VmRSS, VmHWM), CPU time, host CPU busy."""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at a process: monotonic time, RSS and high-water mark (KiB), user+sys CPU (s)."""

    t: float
    rss_kib: int
    hwm_kib: int
    cpu_s: float


def sample_process(pid: int, now: float) -> Sample | None:
    """Read /proc/<pid>/status and /proc/<pid>/stat; None once the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rss = hwm = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    if rss == 0:  # a zombie: status is still there but the memory is gone
        return None
    return Sample(now, rss, hwm, cpu)


def host_cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from the first line of /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # user..steal; guest time is already inside user
    return total - idle, total


def interpolate(times: list[float], values: list[float], t: float) -> float:
    """Linear interpolation of a sampled series at ``t`` (clamped to the sampled range)."""
    if not times:
        raise ValueError("no samples")
    i = bisect_left(times, t)
    if i <= 0:
        return values[0]
    if i >= len(times):
        return values[-1]
    t0, t1 = times[i - 1], times[i]
    v0, v1 = values[i - 1], values[i]
    return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def first_child(pid: int, *, timeout_s: float) -> int:
    """The first child process of ``pid`` (a supervisor's worker), waited for up to
    ``timeout_s``; exits the benchmark (SystemExit) if none starts."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.5)
        children = child_pids(pid)
        if children:
            return children[0]
    raise SystemExit("the worker process did not start")
