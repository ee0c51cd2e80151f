"""`streams deploy`: bad input is one error line and exit 2; the plan holds across targets."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from streams.cli.main import cli
from streams.deploy import topic_resource_name, workload_name
from tests.unit.deploy.golden import IMAGE, ORDERS

EXIT_USAGE = 2


def _invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(
        cli, list(args), env={"STREAMS_STAGE_SHUTDOWN_DEADLINE_S": None, **(env or {})}
    )


def _one_error_line(result: Result) -> str:
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert all(line.startswith(("error: ", "hint: ")) for line in lines), result.stderr
    assert "Usage:" not in result.output
    return errors[0]


@pytest.mark.parametrize("target", ["k8s", "compose", "systemd"])
@pytest.mark.parametrize(
    ("replicas", "message"),
    [
        ("nosuch=2", "has no stage 'nosuch' (stages: validate, enrich, store, totals)"),
        ("enrich=5", "--replicas enrich=5 is above the 4 partitions of stage enrich's input"),
        ("enrich=0", "a stage needs at least 1 worker"),
        ("enrich", "is not STAGE=N"),
    ],
)
def test_bad_replicas_are_one_line_and_exit_2(
    tmp_path: Path, target: str, replicas: str, message: str
) -> None:
    image = [] if target == "systemd" else ["--image", IMAGE]  # systemd runs no image
    result = _invoke(
        "deploy", target, ORDERS, *image, "--out", str(tmp_path / "out"), "--replicas", replicas
    )
    assert result.exit_code == EXIT_USAGE, result.output
    assert message in _one_error_line(result)
    assert not (tmp_path / "out").exists()


def test_replicas_up_to_the_partitions_are_accepted(tmp_path: Path) -> None:
    """Control: the input has 4 partitions, so 4 workers are fine."""
    result = _invoke(
        "deploy", "k8s", ORDERS, "--image", IMAGE, "--out", str(tmp_path), "--replicas", "enrich=4"
    )
    assert result.exit_code == 0, result.output
    statefulset = yaml.safe_load((tmp_path / "enrich/statefulset.yaml").read_text())
    assert statefulset["spec"]["replicas"] == 4


@pytest.mark.parametrize("target", ["k8s", "compose"])
def test_a_missing_image_is_one_line_and_exit_2(tmp_path: Path, target: str) -> None:
    result = _invoke("deploy", target, ORDERS, "--out", str(tmp_path / "out"))
    assert result.exit_code == EXIT_USAGE
    assert _one_error_line(result) == "error: --image is missing"


def test_min_insync_replicas_above_the_replication_factor_is_refused(tmp_path: Path) -> None:
    result = _invoke(
        "deploy", "k8s", ORDERS, "--image", IMAGE, "--out", str(tmp_path),
        "--replication-factor", "2", "--min-insync-replicas", "3",
    )  # fmt: skip
    assert result.exit_code == EXIT_USAGE
    assert "NOT_ENOUGH_REPLICAS" in _one_error_line(result)
    result = _invoke("topics", "create", ORDERS, "--replication-factor", "1",
                     "--min-insync-replicas", "2")  # fmt: skip
    assert result.exit_code == EXIT_USAGE
    _one_error_line(result)


def test_every_target_stops_after_the_drain_deadline(tmp_path: Path) -> None:
    """The stop budget follows STREAMS_STAGE_SHUTDOWN_DEADLINE_S: 60 s drain, 75 s to stop."""
    env: dict[str, str | None] = {"STREAMS_STAGE_SHUTDOWN_DEADLINE_S": "60"}
    assert _invoke("deploy", "k8s", ORDERS, "--image", IMAGE, "--out", str(tmp_path / "k"),
                   env=env).exit_code == 0  # fmt: skip
    assert _invoke("deploy", "systemd", ORDERS, "--out", str(tmp_path / "s"),
                   env=env).exit_code == 0  # fmt: skip
    compose = _invoke("deploy", "compose", ORDERS, "--image", IMAGE, env=env)
    statefulset = yaml.safe_load((tmp_path / "k/enrich/statefulset.yaml").read_text())
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 75
    config = yaml.safe_load((tmp_path / "k/config.yaml").read_text())
    assert config["data"]["STREAMS_STAGE_SHUTDOWN_DEADLINE_S"] == "60"
    unit = (tmp_path / "s/streams-orders-enrich@.service").read_text()
    assert "TimeoutStopSec=75\n" in unit
    assert "Environment=STREAMS_STAGE_SHUTDOWN_DEADLINE_S=60\n" in unit
    services = yaml.safe_load(compose.stdout)["services"]
    assert services["enrich-0"]["stop_grace_period"] == "75s"


def test_the_worker_commands_follow_the_contract(tmp_path: Path) -> None:
    assert _invoke("deploy", "k8s", ORDERS, "--image", IMAGE, "--out", str(tmp_path / "k"),
                   "--replicas", "enrich=2").exit_code == 0  # fmt: skip
    statefulset = yaml.safe_load((tmp_path / "k/enrich/statefulset.yaml").read_text())
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == [
        "streams", "run", ORDERS, "--stage", "enrich", "--slot-from-hostname",
        "--health-port", "8080", "--health-host", "0.0.0.0",  # noqa: S104 - the expected argv
    ]  # fmt: skip
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    # pod orders-enrich-2 is slot 2: the StatefulSet's name plus the ordinal
    assert statefulset["metadata"]["name"] == workload_name("orders", "enrich") == "orders-enrich"
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert env["STREAMS_SASL_PASSWORD"]["name"] == "orders-kafka-credentials"
    compose = yaml.safe_load(_invoke("deploy", "compose", ORDERS, "--image", IMAGE,
                                     "--replicas", "enrich=2").stdout)  # fmt: skip
    assert compose["services"]["enrich-1"]["command"][-2:] == ["--slot", "1"]
    assert compose["services"]["topics"]["command"] == ["streams", "topics", "create", ORDERS]
    assert _invoke("deploy", "systemd", ORDERS, "--out", str(tmp_path / "s")).exit_code == 0
    unit = (tmp_path / "s/streams-orders-enrich@.service").read_text()
    assert "--stage enrich --slot %i\n" in unit
    assert "RestartPreventExitStatus=3 4 5\n" in unit


def test_topic_resource_names() -> None:
    assert topic_resource_name("orders.raw") == "orders.raw"
    stats = topic_resource_name("_streams.stats")
    assert stats.startswith("streams.stats-")
    assert topic_resource_name("Orders.Raw") != topic_resource_name("orders.raw")
    assert topic_resource_name("Orders_Raw") != topic_resource_name("orders-raw")


def test_env_reaches_every_target(tmp_path: Path) -> None:
    url = "PRICING_URL=http://pricing:18090"
    assert _invoke("deploy", "k8s", ORDERS, "--image", IMAGE, "--out", str(tmp_path / "k"),
                   "--env", url).exit_code == 0  # fmt: skip
    config = yaml.safe_load((tmp_path / "k/config.yaml").read_text())
    assert config["data"]["PRICING_URL"] == "http://pricing:18090"
    compose = yaml.safe_load(_invoke("deploy", "compose", ORDERS, "--image", IMAGE,
                                     "--env", url).stdout)  # fmt: skip
    assert compose["services"]["enrich-0"]["environment"]["PRICING_URL"] == "http://pricing:18090"
    assert _invoke("deploy", "systemd", ORDERS, "--out", str(tmp_path / "s"),
                   "--env", url).exit_code == 0  # fmt: skip
    assert f"{url}\n" in (tmp_path / "s/orders.env").read_text()


@pytest.mark.parametrize("value", ["NOEQUALS", "1BAD=x", "=x"])
def test_a_bad_env_is_one_line_and_exit_2(value: str) -> None:
    result = _invoke("deploy", "compose", ORDERS, "--image", IMAGE, "--env", value)
    assert result.exit_code == EXIT_USAGE
    assert "is not KEY=VALUE" in _one_error_line(result)
