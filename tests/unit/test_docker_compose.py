"""docker-compose.yml cannot run here (no Docker engine), so its promises are checked as data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_services_are_kafka_registry_and_the_pipeline_workers(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"kafka", "schema-registry"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["kafka"]["image"] != "apache/kafka:4.0.0"
    assert services["schema-registry"]["image"].startswith("apicurio/apicurio-registry:3.")
    workers = [
        name for name, s in services.items() if s.get("command", [])[:2] == ["streams", "run"]
    ]
    assert workers, "no worker services: the pipeline has no room in the compose file"
    for name in workers:
        assert "pipeline" in services[name]["profiles"]
        assert "--stage" in services[name]["command"]


def _slot(command: list[str]) -> tuple[str, str]:
    return command[command.index("--stage") + 1], command[command.index("--slot") + 1]


def test_every_worker_runs_a_slot_of_its_own_after_the_topics_exist(
    compose: dict[str, Any],
) -> None:
    """Regression: `--scale enrich=3` ran three slot-0 workers, each fencing the last (exit 4,
    restarted, again), and on a fresh broker the workers exited 5 for the missing topics."""
    services = compose["services"]
    workers = {n: s for n, s in services.items() if s.get("command", [])[:2] == ["streams", "run"]}
    slots = [_slot(service["command"]) for service in workers.values()]
    assert len(set(slots)) == len(slots) == len(workers)
    assert services["topics"]["command"][:3] == ["streams", "topics", "create"]
    for service in workers.values():
        assert service["depends_on"]["topics"] == {"condition": "service_completed_successfully"}
        assert "--scale" not in service.get("command", [])
    assert "--scale enrich" not in (ROOT / "docker-compose.yml").read_text()


def test_ports_match_the_local_stack(compose: dict[str, Any]) -> None:
    from streams.config import LocalStackSettings  # noqa: PLC0415

    # the declared defaults, not this environment's overrides (STREAMS_KAFKA_PORT, ...)
    fields = LocalStackSettings.model_fields
    kafka_port = fields["kafka_port"].default
    registry_port = fields["registry_port"].default
    services = compose["services"]
    assert f"127.0.0.1:{kafka_port}:{kafka_port}" in services["kafka"]["ports"]
    assert f"127.0.0.1:{registry_port}:8080" in services["schema-registry"]["ports"]
    env = services["kafka"]["environment"]
    assert f"EXTERNAL://127.0.0.1:{kafka_port}" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_kafka_runs_kraft_with_single_node_transaction_settings(compose: dict[str, Any]) -> None:
    env = compose["services"]["kafka"]["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith("1@")
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"


def test_compose_and_local_template_agree_on_transaction_settings(compose: dict[str, Any]) -> None:
    env = compose["services"]["kafka"]["environment"]
    template = (ROOT / "ops" / "kafka" / "server.properties.template").read_text()
    properties = dict(
        line.split("=", 1)
        for line in template.splitlines()
        if line and not line.startswith("#") and "=" in line
    )
    for key in (
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "offsets.topic.replication.factor",
        "group.initial.rebalance.delay.ms",
        "unclean.leader.election.enable",
        "auto.create.topics.enable",
    ):
        env_key = "KAFKA_" + key.upper().replace(".", "_")
        assert env[env_key] == properties[key], key
