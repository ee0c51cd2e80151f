"""`streams lag`: in-process for arguments, JSON shape and exit codes; as a subprocess for the
exact lines and exit codes of a missing group, an empty group and a pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.cli.main import cli
from streams.pipeline import Pipeline
from tests.integration.cli_pipelines import declared
from tests.integration.conftest import Cluster, PipelineTopics, TopicFactory
from tests.integration.eos import produce_numbered
from tests.integration.groups import commit_group_offsets

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXIT_CHECK_FAILED = 3


def _group_with_commit(admin: AdminClient, topic: str, offset: int) -> str:
    group = f"lag-cli-{uuid.uuid4().hex[:8]}"
    commit_group_offsets(admin, group, {(topic, 0): offset})
    return group


def test_json_lists_partition_dicts_and_exit_0(
    cluster: Cluster, admin: AdminClient, topic_factory: TopicFactory
) -> None:
    topic = topic_factory("cli")
    produce_numbered(cluster, topic, 10, keys=1)
    group = _group_with_commit(admin, topic, 4)
    result = CliRunner().invoke(cli, ["lag", "--group", group, "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert row["group"] == group
    assert (row["committed"], row["high_watermark"], row["lag"]) == (4, 10, 6)
    assert row["status"] == "OK"
    for key in ("log_start", "last_stable_offset", "lag_seconds", "rule", "data_loss"):
        assert key in row


def test_table_shows_no_commit_and_err_exits_3(
    cluster: Cluster, admin: AdminClient, topic_factory: TopicFactory
) -> None:
    topic = topic_factory("cli-loss", partitions=2)
    producer = Producer(cluster.client_config())
    for n in range(20):
        producer.produce(topic, str(n).encode(), partition=n % 2)
    assert producer.flush(30) == 0
    group = f"lag-cli-{uuid.uuid4().hex[:8]}"
    # a live member owns both partitions (so both are listed) and commits only partition 0
    member = Consumer(
        cluster.client_config(
            **{"group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest"}
        )
    )
    member.subscribe([topic])
    try:
        while len(member.assignment()) < 2:
            member.poll(0.2)
        member.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
        deleted = TopicPartition(topic, 0, 6)
        admin.delete_records([deleted])[deleted].result(30)
        result = CliRunner().invoke(cli, ["lag", "--group", group])
    finally:
        member.close()
    assert result.exit_code == EXIT_CHECK_FAILED, result.output
    assert "ERR: committed offset 2 is below log start 6" in result.output
    rows = {int(cells[2]): cells for cells in _table_rows(result.output, group)}
    assert rows[1][3:5] == ["no commit", "0"]  # COMMITTED, LOG-START
    assert rows[1][7:9] == ["-", "-"]  # LAG, LAG-S: unknown, not 0 and not the whole log
    assert rows[1][9] == "OK"
    assert rows[0][3] == "2"


def _table_rows(output: str, group: str) -> list[list[str]]:
    """The partition rows of `streams lag`'s table, split into cells (two spaces apart)."""
    return [
        [cell.strip() for cell in line.split("  ") if cell.strip()]
        for line in output.splitlines()
        if line.startswith(f"{group} ")
    ]


def _lag_subprocess(
    cluster: Cluster, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli.main", "lag", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={**os.environ, "STREAMS_BOOTSTRAP_SERVERS": cluster.bootstrap_servers, **(env or {})},
    )


HEADER = "GROUP  TOPIC  PART  COMMITTED  LOG-START  HW  LSO  LAG  LAG-S  STATUS"


def test_a_group_that_does_not_exist_is_err_and_exits_3(cluster: Cluster) -> None:
    """It used to read as an OK group with no partitions, exit 0."""
    group = f"lag-cli-missing-{uuid.uuid4().hex[:8]}"
    done = _lag_subprocess(cluster, "--group", group)
    assert done.returncode == EXIT_CHECK_FAILED, done.stderr
    assert done.stdout.splitlines() == [
        HEADER,
        f"group {group} (Dead, 0 members): ERR sum lag 0; ERR: group does not exist",
    ]


def test_a_group_without_members_but_with_lag_is_warn(
    cluster: Cluster, admin: AdminClient, topic_factory: TopicFactory
) -> None:
    topic = topic_factory("cli-empty")
    produce_numbered(cluster, topic, 10, keys=1)
    group = _group_with_commit(admin, topic, 4)
    done = _lag_subprocess(cluster, "--group", group)
    assert done.returncode == 0, done.stderr
    header, row, summary = done.stdout.splitlines()
    assert header.split() == HEADER.split()
    cells = [cell for cell in row.split("  ") if cell.strip()]
    lag_seconds = cells.pop(8).strip()
    assert [c.strip() for c in cells] == [
        group,
        topic,
        "0",
        "4",
        "0",
        "10",
        "10",
        "6",
        "OK",
        "OK: lag 6, too little history to judge (1 of 3 samples)",
    ]
    assert float(lag_seconds) >= 0
    assert summary == f"group {group} (Empty, 0 members): WARN sum lag 6; WARN: no members, lag 6"


def _pipeline_env(pipeline_topics: PipelineTopics) -> tuple[dict[str, str], Pipeline]:
    """A `tests.integration.cli_pipelines:pipeline` of unique names, its topics created."""
    name = f"lagcli{uuid.uuid4().hex[:6]}"
    env = {"TEST_PIPELINE": name, "TEST_INPUT": f"{name}.in", "TEST_OUTPUT": f"{name}.out"}
    pipeline = declared(name, env["TEST_INPUT"], env["TEST_OUTPUT"])
    pipeline_topics(pipeline)
    return env, pipeline


def test_pipeline_json_has_the_view_and_partitions(
    cluster: Cluster, pipeline_topics: PipelineTopics
) -> None:
    """A pipeline whose stage never ran: its group does not exist, so ERR and exit 3."""
    env, pipeline = _pipeline_env(pipeline_topics)
    reference = "tests.integration.cli_pipelines:pipeline"
    done = _lag_subprocess(cluster, "--pipeline", reference, "--json", env=env)
    assert done.returncode == EXIT_CHECK_FAILED, done.stderr
    payload = json.loads(done.stdout)
    assert set(payload) >= {"pipeline", "stages", "end_to_end_lag_seconds", "partitions"}
    assert all("retry_backlog" in stage for stage in payload["stages"])
    (stage,) = payload["stages"]
    group = pipeline.get("copy").group_id
    assert (stage["group"], stage["status"]) == (group, "ERR")
    assert stage["rule"] == f"ERR: consumer group {group} does not exist"


def test_pipeline_of_a_caught_up_stage_is_ok_and_exits_0(
    cluster: Cluster, admin: AdminClient, pipeline_topics: PipelineTopics
) -> None:
    env, pipeline = _pipeline_env(pipeline_topics)
    spec = pipeline.get("copy")
    commit_group_offsets(admin, spec.group_id, {(env["TEST_INPUT"], p): 0 for p in range(3)})
    reference = "tests.integration.cli_pipelines:pipeline"
    done = _lag_subprocess(cluster, "--pipeline", reference, "--json", env=env)
    assert done.returncode == 0, done.stderr
    (stage,) = json.loads(done.stdout)["stages"]
    assert (stage["group"], stage["status"], stage["input_lag"]) == (spec.group_id, "OK", 0)
    assert stage["dlq_depth"] == 0
    assert stage["retry_backlog"] == dict.fromkeys(spec.retry_topics, 0)


def test_bad_pipeline_reference_exits_1_with_hint() -> None:
    result = CliRunner().invoke(cli, ["lag", "--pipeline", "no_such_module_xyz:pipeline"])
    assert result.exit_code == 1
    assert "error: cannot import 'no_such_module_xyz'" in result.output
    assert "hint:" in result.output


def test_unreachable_kafka_exits_1_with_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMS_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    result = CliRunner().invoke(cli, ["lag", "--json"])
    assert result.exit_code == 1
    assert "error: cannot read cluster metadata on 127.0.0.1:1" in result.output
    assert "hint: check that the broker answers" in result.output


def test_subprocess_json(cluster: Cluster, admin: AdminClient, topic_factory: TopicFactory) -> None:
    topic = topic_factory("cli-sub")
    produce_numbered(cluster, topic, 7, keys=1)
    group = _group_with_commit(admin, topic, 7)
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli.main", "lag", "--group", group, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={**os.environ, "STREAMS_BOOTSTRAP_SERVERS": cluster.bootstrap_servers},
    )
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert (row["group"], row["committed"], row["lag"], row["status"]) == (group, 7, 0, "OK")
