"""The worker's watchdog ends a process whose loop stopped turning, with exit code 1."""

from __future__ import annotations

import subprocess
import sys
import time

SCRIPT = """
import time
from types import SimpleNamespace
from streams.runtime.worker import _start_watchdog
runner = SimpleNamespace(heartbeat=time.monotonic())
_start_watchdog(runner, 0.5)   # the loop "hangs" from here on
time.sleep(30)
"""

TURNING = """
import time
from types import SimpleNamespace
from streams.runtime.worker import _start_watchdog
runner = SimpleNamespace(heartbeat=time.monotonic())
_start_watchdog(runner, 0.5)
end = time.monotonic() + 2
while time.monotonic() < end:
    runner.heartbeat = time.monotonic()   # the loop keeps turning
    time.sleep(0.05)
print("alive")
"""


def test_a_hung_loop_ends_the_worker_with_exit_1_and_stacks() -> None:
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 1
    assert time.monotonic() - began < 10
    assert "has not turned" in done.stderr
    assert "most recent call first" in done.stderr  # the stack dump


def test_a_turning_loop_is_left_alone() -> None:
    done = subprocess.run(
        [sys.executable, "-c", TURNING], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "alive"
