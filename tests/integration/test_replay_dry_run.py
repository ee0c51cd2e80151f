"""A dry run changes nothing, and counts what a plain consumer counts.

Every replay command without ``--execute`` is run in-process (CliRunner); before and after, the
high watermark (read_uncommitted: aborted writes count too) of every topic of the pipeline and
of the ledger, and the list of consumer groups, must be the same. The control runs one command
with ``--execute`` and sees the watermarks move, so the comparison can fail.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from streams import headers as h
from streams.cli.main import cli
from streams.spec import REPLAY_LEDGER_TOPIC
from tests.integration import replay_pipelines
from tests.integration.eos import read_topic
from tests.integration.replay_fixtures import replay_setup
from tests.integration.replay_pipelines import PARTITIONS, Setup, dead_letters

pytestmark = pytest.mark.integration

__all__ = ["replay_setup"]

REFERENCE = "tests.integration.replay_pipelines:pipeline"


@pytest.fixture
def loaded(replay_setup: Setup, monkeypatch: pytest.MonkeyPatch) -> Setup:
    """The setup's pipeline is the one `streams ... REFERENCE` loads in this process."""
    monkeypatch.setattr(replay_pipelines, "pipeline", replay_setup.pipeline)
    monkeypatch.setenv("STREAMS_SINK_DATABASE_URL", replay_setup.database)
    return replay_setup


def _watermarks(setup: Setup) -> dict[tuple[str, int], int]:
    consumer = Consumer({**setup.config, "group.id": f"hw-{uuid.uuid4().hex}"})
    topics = [spec.name for spec in setup.pipeline.topic_specs()]
    found = {}
    try:
        for topic in [*topics, REPLAY_LEDGER_TOPIC]:
            count = len(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
            for p in range(count):
                found[(topic, p)] = consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=10
                )[1]
    finally:
        consumer.close()
    return found


def _ledger_mentions(setup: Setup, since: dict[tuple[str, int], int]) -> list[bytes]:
    """Ledger records written after ``since`` that name this test's pipeline.

    The ledger is shared by every replay task on the broker (other tests run in parallel), so
    a dry run is checked by what it would have written there, not by the ledger's offsets.
    """
    consumer = Consumer(
        {**setup.config, "group.id": f"ledger-{uuid.uuid4().hex}", "enable.auto.commit": False}
    )
    starts = [
        TopicPartition(topic, p, offset)
        for (topic, p), offset in since.items()
        if topic == REPLAY_LEDGER_TOPIC
    ]
    consumer.assign(starts)
    found: list[bytes] = []
    idle = 0
    while idle < 6:
        batch = consumer.consume(500, timeout=0.5)
        idle = 0 if batch else idle + 1
        for message in batch:
            data = (message.key() or b"") + (message.value() or b"")
            if message.error() is None and setup.name.encode() in data:
                found.append(data)
    consumer.close()
    return found


def _groups(setup: Setup) -> set[str]:
    """This test's groups, and the replay tools' own that hold offsets of this test's topics.

    Other tests share the broker and run replay tasks in parallel: a ``_streams.*`` group is
    this test's only if it committed an offset on one of this test's topics.
    """
    admin = AdminClient(setup.config)
    listed = admin.list_consumer_groups(request_timeout=10).result()
    mine = {g.group_id for g in listed.valid if setup.name in g.group_id}
    tools = [g.group_id for g in listed.valid if g.group_id.startswith("_streams.")]
    for group in tools:
        request = [ConsumerGroupTopicPartitions(group)]
        try:
            offsets = admin.list_consumer_group_offsets(request)[group].result(timeout=20)
        except KafkaException:
            continue  # deleted meanwhile
        if any(setup.name in tp.topic for tp in offsets.topic_partitions or []):
            mine.add(group)
    return mine


def _run(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result


def test_dry_runs_write_nothing_and_count_what_a_plain_consumer_counts(loaded: Setup) -> None:
    setup = loaded
    dead_letters(setup.config, setup.name, 120, reason="retries-exhausted")
    dead_letters(setup.config, setup.name, 40, reason="handler", first=120)
    before, groups = _watermarks(setup), _groups(setup)

    stage = ["--stage", "work"]
    ls = json.loads(_run("dlq", "ls", REFERENCE, *stage, "--json").stdout)
    _run("dlq", "show", REFERENCE, *stage, "--limit", "5")
    plans = {
        to: json.loads(_run("dlq", "redrive", REFERENCE, *stage, "--to", to, "--json").stdout)
        for to in ("first-retry", "input", f"{setup.name}.out")
    }
    handler = json.loads(
        _run("dlq", "redrive", REFERENCE, *stage, "--reason", "handler", "--json").stdout
    )
    _run("replay", "reset", REFERENCE, *stage, "--to-earliest")
    _run("replay", "reset", REFERENCE, "--stage", "store", "--to-earliest")
    _run(
        "replay",
        "copy",
        REFERENCE,
        "--from",
        f"{setup.name}.work.dlq",
        "--to",
        f"{setup.name}.out",
        "--allow-topic",
        f"{setup.name}.out",
    )

    after_dry = _watermarks(setup)
    own = [tp for tp in before if tp[0] != REPLAY_LEDGER_TOPIC]
    assert {tp: after_dry[tp] for tp in own} == {tp: before[tp] for tp in own}, (
        "a dry run wrote to a topic"
    )
    assert _ledger_mentions(setup, before) == [], "a dry run wrote to the replay ledger"
    assert _groups(setup) == groups, "a dry run created a consumer group"

    plain = read_topic(setup.config, setup.dlq, PARTITIONS)
    reasons = [h.get(list(m.headers()), h.ERROR_REASON) for m in plain]
    assert ls["selected"] == len(plain) == 160
    assert {c["reason"]: c["count"] for c in ls["by_cause"]} == {
        "retries-exhausted": reasons.count(b"retries-exhausted"),
        "handler": reasons.count(b"handler"),
    }
    assert handler["selected"] == handler["to_move"] == reasons.count(b"handler") == 40
    for plan in plans.values():
        assert plan["to_move"] == len(plain)
        assert plan["executed"] is False
        per = {p["partition"]: p["selected"] for p in plan["partitions"]}
        assert per == {p: sum(1 for m in plain if m.partition() == p) for p in range(PARTITIONS)}

    # the control: executed, the same command moves the watermarks
    _run("dlq", "redrive", REFERENCE, *stage, "--reason", "handler", "--execute")
    after = _watermarks(setup)
    moved = [tp for tp in before if after[tp] != before[tp]]
    assert any(topic == f"{setup.name}.work.retry.500ms" for topic, _ in moved), moved
    assert (REPLAY_LEDGER_TOPIC, 0) in moved
    assert _ledger_mentions(setup, before), "the executed redrive is in the ledger"
    assert any(g.startswith("_streams.redrive.") for g in _groups(setup) - groups), (
        "the executed redrive's group is found: the group comparison can fail"
    )
