"""Pid files, port checks and the start/stop of one background JVM."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from streams.exceptions import PortInUseError, StalePidFileError

__all__ = ["ManagedProcess", "port_is_free", "process_alive"]

# Children started by this process, kept so they are reaped (not left as zombies or reported as
# leaked) when the same process stops them, as the test fixtures do.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        # field 3 is the state; 'Z' is a zombie that only waits to be reaped
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that nothing listens on right now (the kernel picks them)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    """One port that nothing listens on right now."""
    return free_ports(1, host)[0]


def port_is_free(host: str, port: int) -> bool:
    """True if nothing listens on host:port (we can bind it ourselves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class ManagedProcess:
    """One background process of the local stack, known by its pid file.

    ``marker`` is a string that must appear in the process's command line for a pid from the pid
    file to count as ours: a recycled pid that now belongs to another program is a stale file.
    """

    name: str
    pid_file: Path
    log_file: Path
    marker: str

    def pid(self) -> int | None:
        """The pid of our running process, None if not running; raises on a stale pid file."""
        if not self.pid_file.exists():
            return None
        text = self.pid_file.read_text().strip()
        if not text.isdigit():
            raise StalePidFileError(
                f"{self.name}: pid file {self.pid_file} is unreadable ({text!r})"
            )
        pid = int(text)
        if not process_alive(pid):
            raise StalePidFileError(
                f"{self.name}: stale pid file {self.pid_file}: process {pid} is not running"
            )
        if self.marker not in _cmdline(pid):
            raise StalePidFileError(
                f"{self.name}: stale pid file {self.pid_file}: process {pid} is not the {self.name}"
            )
        return pid

    def recorded_pid(self) -> int | None:
        """The pid in the pid file, whatever runs under it (None if no readable file)."""
        try:
            text = self.pid_file.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def running_pid(self) -> int | None:
        """Like pid(), but a stale pid file counts as not running."""
        try:
            return self.pid()
        except StalePidFileError:
            return None

    def clear_stale(self) -> bool:
        """Remove the pid file if it is stale; True if one was removed."""
        if self.pid_file.exists() and self.running_pid() is None:
            self.pid_file.unlink()
            return True
        return False

    def require_port(self, host: str, port: int, env_var: str) -> None:
        if not port_is_free(host, port):
            raise PortInUseError(
                f"{self.name}: port {port} on {host} is in use by another process",
                hint=f"stop that process (`ss -ltnp 'sport = :{port}'` shows it) "
                f"or choose another port with {env_var}",
            )

    def spawn(self, argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> int:
        """Start argv in its own session, output appended to the log file; writes the pid file."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # own session: it outlives the CLI, and a Ctrl-C in the terminal does not reach it
                start_new_session=True,
            )
        _CHILDREN[proc.pid] = proc
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def stop(self, timeout_s: float) -> tuple[int | None, str]:
        """SIGTERM, wait up to timeout_s, then SIGKILL. Returns (pid, how it ended)."""
        pid = self.running_pid()
        if pid is None:
            removed = self.clear_stale()
            return None, "removed stale pid file" if removed else "not running"
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            _reap(pid)
            if not process_alive(pid):
                self.pid_file.unlink(missing_ok=True)
                return pid, "stopped"
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        child = _CHILDREN.pop(pid, None)
        if child is not None:
            child.wait(timeout=10)
        self.pid_file.unlink(missing_ok=True)
        return pid, f"killed after {timeout_s:.0f} s without exiting on SIGTERM"


def _reap(pid: int) -> None:
    """Reap pid if it is our child (when the same process started and stops it, as tests do)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
