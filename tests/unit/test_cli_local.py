"""`streams local` error lines, as a user sees them: one clear line, a hint, a non-zero exit.

These run the real command in a subprocess with a private STREAMS_HOME; none needs a broker.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.cli.main import cli
from streams.localstack.process import free_port, port_is_free

STREAMS = str(Path(sys.executable).with_name("streams"))


@pytest.fixture
def private_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["STREAMS_HOME"] = str(tmp_path / "home")
    base = free_port()
    env["STREAMS_KAFKA_PORT"] = str(base)
    env["STREAMS_CONTROLLER_PORT"] = str(free_port())
    env["STREAMS_REGISTRY_PORT"] = str(free_port())
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STREAMS, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_up_without_java_says_so_and_exits_1(private_env: dict[str, str], tmp_path: Path) -> None:
    private_env["PATH"] = str(Path(sys.executable).parent)  # python and streams, no java
    private_env.pop("JAVA_HOME", None)
    private_env["STREAMS_JVM_DIRS"] = ""
    done = _run(["local", "up"], private_env)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0] == "error: java not found: the Kafka broker needs Java 17+"
    assert lines[1].startswith("hint: install a JDK 17+")
    assert "Traceback" not in done.stderr


def test_up_with_the_port_taken_names_the_port_and_the_variable(
    private_env: dict[str, str],
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        private_env["STREAMS_KAFKA_PORT"] = str(port)
        done = _run(["local", "up"], private_env)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0] == f"error: kafka: port {port} on 127.0.0.1 is in use by another process"
    assert "STREAMS_KAFKA_PORT" in lines[1]


def _stale_kafka_pid_file(env: dict[str, str]) -> tuple[Path, int]:
    """A kafka pid file naming a process that has exited; returns the file and the pid."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    pid_file = Path(env["STREAMS_HOME"]) / "run" / "kafka.pid"
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(f"{dead.pid}\n")
    return pid_file, dead.pid


def test_up_with_a_stale_pid_file_stops_and_names_the_way_out(
    private_env: dict[str, str],
) -> None:
    pid_file, pid = _stale_kafka_pid_file(private_env)
    done = _run(["local", "up"], private_env)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: kafka: stale pid file")
    assert f"process {pid} is not running" in lines[0]
    assert lines[1] == (
        "hint: its last lines are in `streams local logs kafka|registry`; "
        "`streams local up --clear-stale` removes the file and starts afresh"
    )
    assert pid_file.exists(), "a plain `up` must leave the evidence in place"
    down = _run(["local", "down"], private_env)
    assert down.returncode == 0
    assert "kafka            removed stale pid file" in down.stdout
    assert not pid_file.exists()


def test_up_clear_stale_removes_the_stale_pid_file_and_says_so(
    private_env: dict[str, str],
) -> None:
    pid_file, pid = _stale_kafka_pid_file(private_env)
    # a port in use stops the start right after the clearing: nothing heavy is launched
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        private_env["STREAMS_KAFKA_PORT"] = str(port)
        done = _run(["local", "up", "--clear-stale"], private_env)
    assert not pid_file.exists()
    assert f"kafka: removed a stale pid file (process {pid} no longer runs" in done.stderr
    assert done.returncode == 1
    assert f"error: kafka: port {port} on 127.0.0.1 is in use by another process" in done.stderr


def test_status_of_a_stopped_stack_exits_3_with_json(private_env: dict[str, str]) -> None:
    done = _run(["local", "status", "--json"], private_env)
    assert done.returncode == 3
    import json  # noqa: PLC0415

    status = json.loads(done.stdout)
    assert status["running"] is False
    assert status["kafka"] == {
        "address": f"127.0.0.1:{private_env['STREAMS_KAFKA_PORT']}",
        "log_file": f"{private_env['STREAMS_HOME']}/logs/kafka.log",
        "pid": None,
        "ready": False,
        "running": False,
        "stale_pid_file": False,
    }
    assert status["schema_registry"]["running"] is False


def test_reset_refuses_without_yes_when_not_interactive(private_env: dict[str, str]) -> None:
    done = _run(["local", "reset"], private_env)
    assert done.returncode == 1
    assert "refusing to delete local data without confirmation" in done.stderr


def test_reset_with_yes_removes_data_but_keeps_downloads(
    private_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Path(private_env["STREAMS_HOME"])
    for sub in ("kafka/data", "registry", "logs", "lib/kafka-4.1.2"):
        (home / sub).mkdir(parents=True)
    monkeypatch.setenv("STREAMS_HOME", str(home))
    result = CliRunner().invoke(cli, ["local", "reset", "--yes"])
    assert result.exit_code == 0, result.output
    assert not (home / "kafka").exists()
    assert not (home / "logs").exists()
    assert (home / "lib" / "kafka-4.1.2").exists()


def test_unknown_component_for_logs_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["local", "logs", "zookeeper"])
    assert result.exit_code == 2
    assert "'zookeeper' is not one of 'kafka', 'registry'" in result.output


# --- downloads: progress while Maven fetches, "using cached" afterwards ---------------------

_FAKE_MVN = """#!{python}
import sys, tarfile, time, io
from pathlib import Path
args = sys.argv[1:]
output = Path(next(a for a in args if a.startswith("-DoutputDirectory=")).split("=", 1)[1])
def downloaded(name, size):
    line = f"[INFO] Downloaded from central: https://repo/{{name}} ({{size}} at 9.9 MB/s)"
    print(line, flush=True)
if "-DincludeTypes=tar.gz" in args:
    downloaded("apicurio.tar.gz", "2.5 MB")
    with tarfile.open(output / "apicurio.tar.gz", "w:gz") as tar:
        data = b"fake"
        info = tarfile.TarInfo("apicurio/readme.txt"); info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
else:
    downloaded("kafka.pom", "18 kB")
    downloaded("kafka-clients.jar", "1.2 MB")
    print("[INFO] Downloading from central: https://repo/org/kafka-server.jar", flush=True)
    time.sleep({pause})
    downloaded("kafka-server.jar", "3.0 MB")
    (output / "kafka.jar").write_bytes(b"fake")
"""

_FAKE_JAVA = """#!/bin/sh
# answers -version like a JDK 21, formats storage, and is no broker: it exits at once
case "$*" in
  *-version*) echo 'openjdk version "21.0.9" 2025-10-21' >&2; exit 0;;
  *StorageTool*) exit 0;;
  *) echo "fake java: not a broker"; exit 1;;
esac
"""


# Over 50 lines: the fake Maven and JDK set-up, then two runs with their exact lines.
def test_up_shows_download_progress_then_says_using_cached(
    private_env: dict[str, str], tmp_path: Path
) -> None:
    """Regression: `up` said "fetching ... jars" even when cached, and was silent while it
    downloaded about 200 MB."""
    from streams.localstack.fetch import PROGRESS_EVERY_S  # noqa: PLC0415

    mvn = tmp_path / "mvn"
    mvn.write_text(_FAKE_MVN.format(python=sys.executable, pause=PROGRESS_EVERY_S + 2))
    java_home = tmp_path / "jdk"
    (java_home / "bin").mkdir(parents=True)
    (java_home / "bin" / "java").write_text(_FAKE_JAVA)
    for script in (mvn, java_home / "bin" / "java"):
        script.chmod(0o755)
    registry_port = free_port()
    while not port_is_free("127.0.0.1", registry_port + 1):  # its health port: the next one
        registry_port = free_port()
    private_env.update(
        STREAMS_REGISTRY_PORT=str(registry_port),
        STREAMS_MAVEN_COMMAND=str(mvn),
        STREAMS_JAVA_HOME=str(java_home),
        STREAMS_REGISTRY_JAVA_HOME=str(java_home),
        STREAMS_JVM_DIRS="",
    )
    lib = Path(private_env["STREAMS_HOME"]) / "lib"

    first = _run(["local", "up"], private_env)

    # the seconds depend on the machine's load: masked
    lines = [re.sub(r"\b\d+ s\b", "N s", line) for line in first.stderr.splitlines()]
    ticks = [line for line in lines if "so far" in line]
    assert "kafka: 2 files, 1.2 MB downloaded so far, fetching kafka-server.jar (N s)" in ticks
    assert [line for line in lines if "so far" not in line][:5] == [
        (
            "kafka: downloading 4.1.2 jars from Maven Central (about 75 MB, once; kept in "
            f"{lib / 'kafka-4.1.2'})"
        ),
        "kafka: 3 files, 4.2 MB downloaded in N s",
        f"kafka: formatted {Path(private_env['STREAMS_HOME']) / 'kafka' / 'data'}",
        (
            "schema registry: downloading Apicurio 3.3.3 from Maven Central (about 160 MB, "
            f"once; kept in {lib / 'apicurio-3.3.3'})"
        ),
        "schema registry: 1 file, 2.5 MB downloaded in N s",
    ], first.stderr
    assert lines[-2].startswith("error: kafka exited during start-up:")
    assert first.returncode == 1

    second = _run(["local", "up", "--clear-stale"], private_env)

    cached = [line for line in second.stderr.splitlines() if "cached" in line]
    assert cached == [
        f"kafka: using cached 4.1.2 jars ({lib / 'kafka-4.1.2'})",
        f"schema registry: using cached Apicurio 3.3.3 ({lib / 'apicurio-3.3.3'})",
    ]
    assert "downloading" not in second.stderr
