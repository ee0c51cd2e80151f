"""The session's real Kafka broker and schema registry, chosen in this order:

1. ``STREAMS_TEST_BOOTSTRAP_SERVERS`` (and ``STREAMS_TEST_SCHEMA_REGISTRY_URL``) from the
   environment: a cluster you run yourself; nothing is started or stopped. ``make test`` sets
   them through ``tests/stack.py``, which starts one stack for all its parallel processes
   (and ``STREAMS_TEST_STACK_ENV``, the stack's folder and ports, for the tests of
   ``streams local``).
2. testcontainers, where a Docker engine actually answers a ping (a Docker CLI alone does not
   count): ``apache/kafka`` configured for transactions on one node, and Apicurio Registry.
3. The local stack (``streams local up``) in ``$STREAMS_HOME``, reused when it runs and answers.
4. Otherwise a private local stack for this session only: a temporary folder, free ports, the
   jars shared with ``$STREAMS_HOME/lib``; stopped and deleted at the end. It never reads or
   changes the state of the developer's stack, so a stale pid file or a broken data folder in
   ``$STREAMS_HOME`` (a machine image taken while the stack ran, a reboot) cannot stop the tests.
   ``STREAMS_TEST_KEEP_STACK=1`` keeps the folder (logs, data) for a post-mortem.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from streams.localstack.process import free_port
from streams.localstack.stack import LocalStack

KAFKA_IMAGE = "apache/kafka:4.1.2"
REGISTRY_IMAGE = "apicurio/apicurio-registry:3.3.3"


@dataclass(frozen=True)
class Cluster:
    bootstrap_servers: str
    schema_registry_url: str
    source: str
    # for a local stack: the environment under which `streams local ...` addresses it
    # (STREAMS_HOME and the ports); None for a cluster that is not a local stack
    local_env: dict[str, str] | None = None

    def local_command_env(self) -> dict[str, str]:
        """os.environ plus ``local_env``; skips the test when the cluster is not a local stack."""
        if self.local_env is None:
            pytest.skip(f"the session cluster comes from {self.source}, not a local stack")
        return {**os.environ, **self.local_env}

    def client_config(self, **extra: Any) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap_servers, **extra}


def _docker_answers() -> bool:
    """True only if a Docker engine answers /_ping (a Docker CLI without an engine is common)."""
    try:
        import docker  # noqa: PLC0415 - optional; only where testcontainers is installed
    except ImportError:
        return False
    base_url = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if base_url.startswith("unix://") and not Path(base_url.removeprefix("unix://")).exists():
        return False
    # an explicit API version: docker.from_env() would query the version first and leak the
    # socket of that request when no engine answers
    client = docker.APIClient(base_url=base_url, version="1.41", timeout=3)
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - refused, timed out, no permission: all mean "no Docker"
        return False
    finally:
        client.close()


def _containers() -> Iterator[Cluster]:
    from testcontainers.core.container import DockerContainer  # noqa: PLC0415
    from testcontainers.core.waiting_utils import wait_for_logs  # noqa: PLC0415

    port = free_port()
    kafka = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(9092, port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{port}")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env(
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
        )
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
    )
    registry = DockerContainer(REGISTRY_IMAGE).with_exposed_ports(8080)
    with kafka, registry:
        wait_for_logs(kafka, "Kafka Server started", timeout=120)
        wait_for_logs(registry, "Listening on", timeout=120)
        host = registry.get_container_host_ip()
        registry_port = registry.get_exposed_port(8080)
        yield Cluster(
            f"127.0.0.1:{port}",
            f"http://{host}:{registry_port}/apis/ccompat/v7",
            "testcontainers",
        )


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The session's broker and registry (see the module docstring for the order)."""
    bootstrap = os.environ.get("STREAMS_TEST_BOOTSTRAP_SERVERS")
    if bootstrap:
        registry = os.environ.get(
            "STREAMS_TEST_SCHEMA_REGISTRY_URL", "http://127.0.0.1:18081/apis/ccompat/v7"
        )
        # set by tests/stack.py (make test): a local stack, shared by the parallel processes
        stack_env = os.environ.get("STREAMS_TEST_STACK_ENV")
        local_env = None if stack_env is None else dict(json.loads(stack_env))
        source = "environment" if local_env is None else "local stack of tests/stack.py"
        yield Cluster(bootstrap, registry, source, local_env)
        return
    if _docker_answers():
        yield from _containers()
        return
    developer_stack = LocalStack()
    if developer_stack.status().running:
        status = developer_stack.status()
        yield Cluster(status.bootstrap_servers, status.schema_registry_url, "local", {})
        return
    yield from _private_stack()


def _say(message: str) -> None:
    sys.stderr.write(f"[test stack] {message}\n")


def _private_stack() -> Iterator[Cluster]:
    home = Path(tempfile.mkdtemp(prefix="streams-test-stack-"))
    stack = LocalStack.private(home)
    try:
        stack.up(progress=_say)
        status = stack.status()
        settings = stack.settings
        yield Cluster(
            status.bootstrap_servers,
            status.schema_registry_url,
            "private local",
            {
                "STREAMS_HOME": str(settings.home),
                "STREAMS_KAFKA_PORT": str(settings.kafka_port),
                "STREAMS_CONTROLLER_PORT": str(settings.controller_port),
                "STREAMS_REGISTRY_PORT": str(settings.registry_port),
            },
        )
    finally:
        stack.down()
        if os.environ.get("STREAMS_TEST_KEEP_STACK") == "1":
            _say(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def admin(cluster: Cluster) -> AdminClient:
    return AdminClient(cluster.client_config())
