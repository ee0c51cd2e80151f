"""`streams lag`: in-process for arguments, JSON shape and exit codes; once as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.cli.main import cli
from tests.integration.conftest import Cluster, TopicFactory
from tests.integration.eos import produce_numbered

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXIT_CHECK_FAILED = 3


def _group_with_commit(admin: AdminClient, topic: str, offset: int) -> str:
    group = f"lag-cli-{uuid.uuid4().hex[:8]}"
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, offset)])
    for future in admin.alter_consumer_group_offsets([request]).values():
        future.result(timeout=30)
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
    topic = topic_factory("cli-loss")
    produce_numbered(cluster, topic, 10, keys=1)
    group = _group_with_commit(admin, topic, 2)
    admin.delete_records([TopicPartition(topic, 0, 6)])[TopicPartition(topic, 0, 6)].result(30)
    result = CliRunner().invoke(cli, ["lag", "--group", group])
    assert result.exit_code == EXIT_CHECK_FAILED, result.output
    assert "ERR: committed offset 2 is below log start 6" in result.output


def test_pipeline_json_has_the_view_and_partitions() -> None:
    result = CliRunner().invoke(
        cli, ["lag", "--pipeline", "tests.integration.cli_pipelines:pipeline", "--json"]
    )
    assert result.exit_code in {0, EXIT_CHECK_FAILED}, result.output
    payload = json.loads(result.output)
    assert set(payload) >= {"pipeline", "stages", "end_to_end_lag_seconds", "partitions"}
    assert all("retry_backlog" in stage for stage in payload["stages"])


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
