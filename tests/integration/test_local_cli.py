"""`streams local up` against a stack that already runs: idempotent, and says what runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import Cluster

pytestmark = pytest.mark.integration


def test_up_twice_reports_what_runs_and_starts_nothing(cluster: Cluster) -> None:
    env = cluster.local_command_env()
    streams = str(Path(sys.executable).with_name("streams"))
    done = subprocess.run(
        [streams, "local", "up"], capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "local stack already running:"
    assert lines[1].startswith("kafka            running  pid ")
    assert lines[2].startswith("schema registry  running  pid ")
    assert f"bootstrap servers:   {cluster.bootstrap_servers}" in lines
    assert "fetching" not in done.stderr
