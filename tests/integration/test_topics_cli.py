"""`ensure_topics` and `streams topics create` against the real broker.

The library call creates what is missing and reports how existing topics differ from the
declaration without altering them; the command is tested in-process (arguments, exit codes)
and as a subprocess (its ``--json`` on the real broker).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner, Result
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource  # the public re-export is untyped
from confluent_kafka.cimpl import NewTopic

from streams import topics
from streams.cli.main import cli
from streams.config import KafkaSettings
from streams.topics import ensure_topics
from tests.integration import cli_pipelines
from tests.integration.cli_pipelines import (
    DEFAULT_CONFIG,
    OUTPUT_CONFIG,
    OUTPUT_PARTITIONS,
    declared,
    expected,
)
from tests.integration.conftest import Cluster

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = "tests.integration.cli_pipelines:pipeline"
EXIT_CHECK_FAILED = 3


@dataclass(frozen=True)
class Names:
    pipeline: str
    source: str
    sink: str

    @property
    def routing(self) -> list[str]:
        """The stage's retry and dead-letter topics, which `topics create` makes too."""
        group = f"{self.pipeline}.copy"
        return [f"{group}.retry.5s", f"{group}.retry.30s", f"{group}.retry.5m", f"{group}.dlq"]

    @property
    def all(self) -> list[str]:
        return [self.source, self.sink, *self.routing]

    @property
    def env(self) -> dict[str, str]:
        return {"TEST_PIPELINE": self.pipeline, "TEST_INPUT": self.source, "TEST_OUTPUT": self.sink}


@pytest.fixture
def names(admin: AdminClient, unique_id: str) -> Iterator[Names]:
    """Unique pipeline and topic names; whichever of the topics exist at the end are deleted."""
    created = Names(
        f"topicscli{unique_id}", f"test.topicscli.{unique_id}.in", f"test.topicscli.{unique_id}.out"
    )
    yield created
    existing = admin.list_topics(timeout=30).topics
    doomed = [name for name in created.all if name in existing]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            future.result(timeout=30)


def _metadata(admin: AdminClient, topic: str) -> Any:
    """The topic's metadata, once the broker lists it (a new topic shows up after a moment)."""
    deadline = time.monotonic() + 15
    while True:
        metadata = admin.list_topics(topic, timeout=30).topics[topic]
        if metadata.error is None or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert metadata.error is None, metadata.error
    return metadata


def _describe(admin: AdminClient, topic: str) -> tuple[int, dict[str, str]]:
    """The topic's partition count and its config as the broker reports it."""
    metadata = _metadata(admin, topic)
    resource = ConfigResource("TOPIC", topic)
    entries = admin.describe_configs([resource])[resource].result(timeout=30)
    return len(metadata.partitions), {key: str(entry.value) for key, entry in entries.items()}


def _assert_as_declared(admin: AdminClient, names: Names) -> None:
    for topic, (partitions, config) in expected(names.source, names.sink).items():
        actual_partitions, actual_config = _describe(admin, topic)
        assert actual_partitions == partitions, topic
        assert {key: actual_config.get(key) for key in config} == config, topic


def _create(admin: AdminClient, topic: str, partitions: int, config: dict[str, str]) -> None:
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config)]
    )
    futures[topic].result(timeout=30)
    _metadata(admin, topic)


def _settings(cluster: Cluster) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=cluster.bootstrap_servers)


# --- the library call ---------------------------------------------------------------------


def test_ensure_topics_creates_every_declared_topic_as_declared_and_is_idempotent(
    cluster: Cluster, admin: AdminClient, names: Names
) -> None:
    pipeline = declared(names.pipeline, names.source, names.sink)

    first = ensure_topics(pipeline, kafka=_settings(cluster))

    assert sorted(first.created) == sorted(names.all)
    assert first.unchanged == []
    assert first.differences == {}
    assert first.ok
    _assert_as_declared(admin, names)

    second = ensure_topics(pipeline, kafka=_settings(cluster))

    assert second.created == []
    assert sorted(second.unchanged) == sorted(names.all)
    assert second.differences == {}
    assert second.ok
    _assert_as_declared(admin, names)


@dataclass(frozen=True)
class Existing:
    """An output topic that exists before `ensure_topics` runs, and the difference expected."""

    partitions: int
    config: dict[str, str]
    problem: str


@pytest.mark.parametrize(
    "existing",
    [
        Existing(
            1,
            {**DEFAULT_CONFIG, **OUTPUT_CONFIG},
            f"partitions: declared {OUTPUT_PARTITIONS}, topic has 1",
        ),
        Existing(
            OUTPUT_PARTITIONS,
            {**DEFAULT_CONFIG, **OUTPUT_CONFIG, "retention.ms": "7200000"},
            f"retention.ms: declared {DEFAULT_CONFIG['retention.ms']}, topic has 7200000",
        ),
    ],
    ids=["partitions", "config"],
)
def test_ensure_topics_reports_an_existing_topic_that_differs_and_leaves_it_alone(
    cluster: Cluster, admin: AdminClient, names: Names, existing: Existing
) -> None:
    _create(admin, names.sink, existing.partitions, existing.config)
    before = _describe(admin, names.sink)

    report = ensure_topics(
        declared(names.pipeline, names.source, names.sink), kafka=_settings(cluster)
    )

    assert sorted(report.created) == sorted([names.source, *names.routing])
    assert report.unchanged == []
    assert report.differences == {names.sink: [existing.problem]}
    assert not report.ok
    after = _describe(admin, names.sink)
    assert after[0] == before[0] == existing.partitions
    assert {key: after[1][key] for key in existing.config} == existing.config


class _StaleAdminClient(AdminClient):
    """Lists topics without ``hidden``, as a broker's metadata can right after another client
    created it (two `topics create` runs at once, or a deploy racing an operator)."""

    hidden: ClassVar[str] = ""

    def list_topics(self, *args: Any, **kwargs: Any) -> Any:
        metadata = super().list_topics(*args, **kwargs)
        metadata.topics.pop(self.hidden, None)
        return metadata


def test_ensure_topics_compares_a_topic_that_appeared_between_listing_and_creating(
    cluster: Cluster, admin: AdminClient, names: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: TOPIC_ALREADY_EXISTS was counted as created, hiding a partition mismatch."""
    _create(admin, names.sink, 1, {**DEFAULT_CONFIG, **OUTPUT_CONFIG})
    monkeypatch.setattr(_StaleAdminClient, "hidden", names.sink)
    monkeypatch.setattr(topics, "AdminClient", _StaleAdminClient)

    report = ensure_topics(
        declared(names.pipeline, names.source, names.sink), kafka=_settings(cluster)
    )

    assert sorted(report.created) == sorted([names.source, *names.routing])
    assert report.differences == {
        names.sink: [f"partitions: declared {OUTPUT_PARTITIONS}, topic has 1"]
    }
    assert not report.ok


# --- the command, in-process: arguments and exit codes --------------------------------------


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["topics", "create", *args])


def _json(result: Result) -> Any:
    return json.loads(result.stdout)


def test_cli_creates_then_reports_unchanged_as_json(
    admin: AdminClient, names: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        cli_pipelines, "pipeline", declared(names.pipeline, names.source, names.sink)
    )

    first = _invoke(REFERENCE, "--json")

    assert first.exit_code == 0, first.output
    payload = _json(first)
    assert sorted(payload["created"]) == sorted(names.all)
    assert payload["unchanged"] == []
    assert payload["differences"] == {}
    _assert_as_declared(admin, names)

    second = _invoke(REFERENCE, "--json")

    assert second.exit_code == 0, second.output
    payload = _json(second)
    assert payload["created"] == []
    assert sorted(payload["unchanged"]) == sorted(names.all)
    assert payload["differences"] == {}


def test_cli_exits_3_and_lists_the_differences_when_a_topic_differs(
    admin: AdminClient, names: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    _create(admin, names.sink, 1, {**DEFAULT_CONFIG, **OUTPUT_CONFIG})
    monkeypatch.setattr(
        cli_pipelines, "pipeline", declared(names.pipeline, names.source, names.sink)
    )

    json_result = _invoke(REFERENCE, "--json")

    assert json_result.exit_code == EXIT_CHECK_FAILED, json_result.output
    payload = _json(json_result)
    payload["created"] = sorted(payload["created"])
    assert payload == {
        "created": sorted([names.source, *names.routing]),
        "unchanged": [],
        "differences": {
            names.sink: [f"partitions: declared {OUTPUT_PARTITIONS}, topic has 1"],
        },
    }

    text_result = _invoke(REFERENCE)

    assert text_result.exit_code == EXIT_CHECK_FAILED, text_result.output
    assert f"exists    {names.source}" in text_result.stdout.splitlines()
    assert f"DIFFERS   {names.sink}: partitions: declared {OUTPUT_PARTITIONS}, topic has 1" in (
        text_result.stdout.splitlines()
    )
    assert text_result.stderr.startswith("hint: ")
    assert _describe(admin, names.sink)[0] == 1


@pytest.mark.parametrize(
    ("reference", "error", "hint"),
    [
        ("nocolon", "error: 'nocolon' is not MODULE:PIPELINE", "hint: name the module"),
        (
            "tests.integration.no_such_module:pipeline",
            "error: cannot import 'tests.integration.no_such_module'",
            "hint: run from the folder",
        ),
    ],
    ids=["nocolon", "unknown-module"],
)
def test_cli_exits_1_with_an_error_and_a_hint_for_a_bad_reference(
    reference: str, error: str, hint: str
) -> None:
    result = _invoke(reference, "--json")

    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(error), lines
    assert lines[1].startswith(hint), lines
    assert result.stdout == ""


def test_cli_exits_2_without_the_pipeline_argument() -> None:
    result = _invoke("--json")

    assert result.exit_code == 2, result.output
    assert "Missing argument 'MODULE:PIPELINE'" in result.stderr


# --- the command as a subprocess on the real broker -----------------------------------------


def _streams(names: Names, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("streams")), *args],
        cwd=ROOT,
        env={**os.environ, **names.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_subprocess_creates_the_topics_and_reports_json(admin: AdminClient, names: Names) -> None:
    first = _streams(names, "topics", "create", REFERENCE, "--json")

    assert first.returncode == 0, first.stderr
    payload = json.loads(first.stdout)
    assert sorted(payload["created"]) == sorted(names.all)
    assert payload["unchanged"] == []
    assert payload["differences"] == {}
    _assert_as_declared(admin, names)

    second = _streams(names, "topics", "create", REFERENCE, "--json")

    assert second.returncode == 0, second.stderr
    payload = json.loads(second.stdout)
    assert payload["created"] == []
    assert sorted(payload["unchanged"]) == sorted(names.all)
    assert payload["differences"] == {}
