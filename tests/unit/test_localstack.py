"""The local stack's pure logic: java versions, pid files, ports, templates, Maven errors."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from streams.config import LocalStackSettings
from streams.exceptions import LocalStackError, PortInUseError, PrerequisiteError, StalePidFileError
from streams.localstack.components import KafkaBroker, ops_dir
from streams.localstack.fetch import fetch_with_maven
from streams.localstack.jdk import find_java, parse_java_version
from streams.localstack.process import ManagedProcess, port_is_free

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "25.0.3" 2026-04-21 LTS', 25),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "21-ea" 2023-09-19', 21),
        ("no version here", None),
    ],
)
def test_parse_java_version(text: str, major: int | None) -> None:
    assert parse_java_version(text) == major


def _fake_java(folder: Path, version: str) -> Path:
    java = folder / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2025-01-01' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    return java


def test_find_java_reports_missing_java_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("STREAMS_JVM_DIRS", "")
    with pytest.raises(PrerequisiteError) as caught:
        find_java(17, purpose="the Kafka broker", env_var="STREAMS_JAVA_HOME")
    assert str(caught.value) == "java not found: the Kafka broker needs Java 17+"
    assert "STREAMS_JAVA_HOME" in caught.value.hint


def test_find_java_skips_old_runtimes_and_names_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _fake_java(tmp_path / "jdk11", "11.0.2")
    monkeypatch.setenv("PATH", str(old.parent))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("STREAMS_JVM_DIRS", str(tmp_path / "jvms"))
    with pytest.raises(PrerequisiteError, match=r"needs Java 17\+, found only Java 11"):
        find_java(17, purpose="the Kafka broker", env_var="STREAMS_JAVA_HOME")
    newer = _fake_java(tmp_path / "jvms" / "temurin-21", "21.0.1")
    runtime = find_java(17, purpose="the Kafka broker", env_var="STREAMS_JAVA_HOME")
    assert runtime.path == newer
    assert runtime.major == 21


def test_pid_file_of_a_dead_process_is_stale(tmp_path: Path) -> None:
    done = subprocess.run(["true"], check=True)
    assert done.returncode == 0
    dead = subprocess.Popen(["true"])
    dead.wait()
    process = ManagedProcess("kafka", tmp_path / "kafka.pid", tmp_path / "kafka.log", "kafka.Kafka")
    process.pid_file.write_text(f"{dead.pid}\n")
    with pytest.raises(StalePidFileError, match="is not running"):
        process.pid()
    assert process.running_pid() is None
    assert process.clear_stale()
    assert not process.pid_file.exists()


def test_pid_file_naming_another_program_is_stale(tmp_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        process = ManagedProcess("kafka", tmp_path / "k.pid", tmp_path / "k.log", "kafka.Kafka")
        process.pid_file.write_text(f"{other.pid}\n")
        with pytest.raises(StalePidFileError, match="is not the kafka"):
            process.pid()
    finally:
        other.kill()
        other.wait()


def test_stop_sends_sigterm_and_reports(tmp_path: Path) -> None:
    process = ManagedProcess("sleeper", tmp_path / "s.pid", tmp_path / "s.log", "sleeper-marker")
    pid = process.spawn(
        [
            sys.executable,
            "-c",
            "import time, sys; sys.argv.append('sleeper-marker'); time.sleep(60)",
            "sleeper-marker",
        ],
        cwd=tmp_path,
    )
    assert process.pid() == pid
    stopped_pid, outcome = process.stop(timeout_s=10)
    assert (stopped_pid, outcome) == (pid, "stopped")
    assert not process.pid_file.exists()
    assert process.stop(timeout_s=1) == (None, "not running")


def test_port_in_use_is_reported_with_the_variable_to_change(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)
        process = ManagedProcess("kafka", tmp_path / "k.pid", tmp_path / "k.log", "kafka.Kafka")
        with pytest.raises(PortInUseError) as caught:
            process.require_port("127.0.0.1", port, "STREAMS_KAFKA_PORT")
    assert f"port {port} on 127.0.0.1 is in use" in str(caught.value)
    assert "STREAMS_KAFKA_PORT" in caught.value.hint
    assert port_is_free("127.0.0.1", port)


def test_server_properties_have_the_single_node_transaction_settings(tmp_path: Path) -> None:
    settings = LocalStackSettings(home=tmp_path, kafka_port=29092, controller_port=29093)
    text = KafkaBroker(settings).write_config().read_text()
    properties = dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert properties["transaction.state.log.replication.factor"] == "1"
    assert properties["transaction.state.log.min.isr"] == "1"
    assert properties["offsets.topic.replication.factor"] == "1"
    assert properties["group.initial.rebalance.delay.ms"] == "0"
    assert properties["process.roles"] == "broker,controller"
    assert properties["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert properties["log.dirs"] == str(tmp_path / "kafka" / "data")
    assert "$" not in text


def test_pom_versions_match_the_settings_defaults() -> None:
    defaults = LocalStackSettings()
    kafka_pom = (ops_dir() / "kafka" / "pom.xml").read_text()
    registry_pom = (ops_dir() / "registry" / "pom.xml").read_text()
    assert f"<kafka.version>{defaults.kafka_version}</kafka.version>" in kafka_pom
    assert f"<log4j2.version>{defaults.log4j2_version}</log4j2.version>" in kafka_pom
    assert f"<apicurio.version>{defaults.apicurio_version}</apicurio.version>" in registry_pom
    # the broker needs these at run time and Kafka's pom does not bring them
    for artifact in ("log4j-api", "log4j-core", "log4j-slf4j-impl"):
        assert f"<artifactId>{artifact}</artifactId>" in kafka_pom
    major, minor = (int(x) for x in defaults.kafka_version.split(".")[:2])
    assert (major, minor) >= (4, 1)


def _fake_mvn(folder: Path, output: str, code: int) -> Path:
    mvn = folder / "mvn"
    mvn.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\nexit {code}\n")
    mvn.chmod(mvn.stat().st_mode | stat.S_IEXEC)
    return mvn


def test_unreachable_repository_is_one_clear_error(tmp_path: Path) -> None:
    mvn = _fake_mvn(
        tmp_path,
        "[ERROR] Failed to execute goal: Could not transfer artifact "
        "org.apache.kafka:kafka_2.13:pom:4.1.2 from/to central "
        "(https://repo.maven.apache.org/maven2): Unknown host "
        "repo.maven.apache.org",
        1,
    )
    with pytest.raises(PrerequisiteError) as caught:
        fetch_with_maven(
            mvn=str(mvn), pom=tmp_path / "pom.xml", output=tmp_path / "out", properties={}, extra=[]
        )
    assert str(caught.value).startswith("Maven could not download from its repository")
    assert "Maven Central must be reachable" in caught.value.hint


def test_missing_mvn_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PrerequisiteError, match="mvn not found"):
        fetch_with_maven(
            mvn=str(tmp_path / "no-such-mvn"),
            pom=tmp_path / "pom.xml",
            output=tmp_path / "out",
            properties={},
            extra=[],
        )


def test_other_maven_failures_name_the_command(tmp_path: Path) -> None:
    mvn = _fake_mvn(tmp_path, "[ERROR] Non-parseable POM", 1)
    with pytest.raises(LocalStackError) as caught:
        fetch_with_maven(
            mvn=str(mvn), pom=tmp_path / "pom.xml", output=tmp_path / "out", properties={}, extra=[]
        )
    assert not isinstance(caught.value, PrerequisiteError)
    assert "Non-parseable POM" in str(caught.value)
    assert re.search(r"run it by hand", caught.value.hint)


def test_settings_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STREAMS_HOME", str(tmp_path))
    monkeypatch.setenv("STREAMS_KAFKA_PORT", "29999")
    settings = LocalStackSettings()
    assert settings.home == tmp_path
    assert settings.bootstrap_servers == "127.0.0.1:29999"
    assert os.environ["STREAMS_HOME"] == str(tmp_path)
