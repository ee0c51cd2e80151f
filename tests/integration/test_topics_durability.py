"""`streams topics create --replication-factor N --min-insync-replicas M` on the real broker.

The stack is a single broker: a replication factor of 2 cannot be placed. The command says so
in one line and creates nothing; the broker's own answer to such a request is shown too.
``--min-insync-replicas 1`` is read back from the created topics with describe_configs, and
topics created without it are reported as differing when it is asked for later.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource  # the public re-export is untyped
from confluent_kafka.cimpl import NewTopic

from tests.integration.conftest import Cluster

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = "tests.integration.cli_pipelines:pipeline"
STREAMS = str(Path(sys.executable).with_name("streams"))
EXIT_FAILED = 1
EXIT_CHECK_FAILED = 3
# ConfigSource.DYNAMIC_TOPIC_CONFIG: set on the topic itself, not inherited from the broker
TOPIC_CONFIG_SOURCE = 1


@pytest.fixture
def names(admin: AdminClient, unique_id: str) -> Iterator[dict[str, str]]:
    env = {
        "TEST_PIPELINE": f"durable{unique_id}",
        "TEST_INPUT": f"test.durable.{unique_id}.in",
        "TEST_OUTPUT": f"test.durable.{unique_id}.out",
    }
    yield env
    doomed = [t for t in admin.list_topics(timeout=30).topics if unique_id in t]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            future.result(timeout=30)


def _topics(admin: AdminClient, names: dict[str, str]) -> list[str]:
    key = names["TEST_PIPELINE"].removeprefix("durable")
    return sorted(t for t in admin.list_topics(timeout=30).topics if key in t)


def _create(
    cluster: Cluster, names: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **names, "STREAMS_BOOTSTRAP_SERVERS": cluster.bootstrap_servers}
    return subprocess.run(
        [STREAMS, "topics", "create", REFERENCE, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_replication_factor_above_the_broker_count_fails_in_one_line_and_creates_nothing(
    cluster: Cluster, admin: AdminClient, names: dict[str, str]
) -> None:
    brokers = len(admin.list_topics(timeout=30).brokers)
    factor = brokers + 1

    result = _create(cluster, names, "--replication-factor", str(factor))

    assert result.returncode == EXIT_FAILED, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == (
        f"error: replication factor {factor} is above the {brokers} broker(s) of the cluster at "
        f"{cluster.bootstrap_servers}; no topic was created"
    )
    assert lines[1:] == [f"hint: give --replication-factor {brokers} or less, or add brokers"]
    assert _topics(admin, names) == []

    # Control: the broker itself refuses such a topic (the check above is not a guess)
    doomed = f"test.durable.{names['TEST_PIPELINE'].removeprefix('durable')}.control"
    future = admin.create_topics([NewTopic(doomed, 1, replication_factor=factor)])[doomed]
    with pytest.raises(KafkaException, match="INVALID_REPLICATION_FACTOR"):
        future.result(timeout=30)


def test_min_insync_replicas_is_set_on_every_created_topic(
    cluster: Cluster, admin: AdminClient, names: dict[str, str]
) -> None:
    result = _create(cluster, names, "--replication-factor", "1", "--min-insync-replicas", "1")

    assert result.returncode == 0, result.stdout + result.stderr
    created = _topics(admin, names)
    assert len(created) == 6  # input, output, three retry tiers, the DLQ
    resources = [ConfigResource("TOPIC", topic) for topic in created]
    for resource, future in admin.describe_configs(resources).items():
        entry = future.result(timeout=30)["min.insync.replicas"]
        assert (entry.value, entry.source) == ("1", TOPIC_CONFIG_SOURCE), resource
    again = _create(cluster, names, "--min-insync-replicas", "1")
    assert again.returncode == 0, again.stdout + again.stderr
    assert all(line.startswith("exists") for line in again.stdout.splitlines())


def test_topics_created_without_min_insync_replicas_inherit_it_and_a_new_value_differs(
    cluster: Cluster, admin: AdminClient, names: dict[str, str]
) -> None:
    """Control: without the flag the topics inherit the broker's value (not set on them); a
    value other than the effective one is reported on existing topics, never altered."""
    first = _create(cluster, names)
    assert first.returncode == 0, first.stdout + first.stderr
    topic = names["TEST_INPUT"]
    resource = ConfigResource("TOPIC", topic)
    entry = admin.describe_configs([resource])[resource].result(timeout=30)["min.insync.replicas"]
    assert entry.source != TOPIC_CONFIG_SOURCE

    wanted = str(int(entry.value) + 1)

    second = _create(cluster, names, "--min-insync-replicas", wanted)

    assert second.returncode == EXIT_CHECK_FAILED, second.stdout + second.stderr
    assert (
        f"DIFFERS   {topic}: min.insync.replicas: declared {wanted}, topic has {entry.value}"
        in second.stdout.splitlines()
    )
    after = admin.describe_configs([resource])[resource].result(timeout=30)
    assert after["min.insync.replicas"].value == entry.value
