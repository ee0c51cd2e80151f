"""`streams replay reset` on the real broker: live members, SQL sinks, key-ordered stages, files.

A sink keeps its offsets in its database: a reset that only moves the Kafka offsets is ignored
by it (the control shows that), and `replay reset` rewrites the database's. Replayed once more,
the table without a key holds every row twice and the keyed table each row once.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.cli.main import cli
from streams.config import KafkaSettings, SinkSettings, StageSettings
from streams.database import Database
from streams.sinks import SinkRunner, read_offsets
from streams.stage import StageRunner
from tests.integration import replay_pipelines
from tests.integration.conftest import Cluster, PipelineTopics
from tests.integration.replay_fixtures import replay_setup
from tests.integration.replay_pipelines import PARTITIONS, Setup, build, produce_inputs

pytestmark = pytest.mark.integration

__all__ = ["replay_setup"]

REFERENCE = "tests.integration.replay_pipelines:pipeline"


@pytest.fixture
def loaded(replay_setup: Setup, monkeypatch: pytest.MonkeyPatch) -> Setup:
    monkeypatch.setattr(replay_pipelines, "pipeline", replay_setup.pipeline)
    monkeypatch.setenv("STREAMS_SINK_DATABASE_URL", replay_setup.database)
    return replay_setup


def kafka(setup: Setup) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=setup.config["bootstrap.servers"])


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def committed(setup: Setup, group: str, topic: str) -> dict[int, int]:
    admin = AdminClient(setup.config)
    wanted = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    request = ConsumerGroupTopicPartitions(group, wanted)
    found = admin.list_consumer_group_offsets([request])[group].result(timeout=30)
    return {tp.partition: tp.offset for tp in found.topic_partitions}


def test_a_reset_is_refused_while_the_group_has_live_members_naming_them(loaded: Setup) -> None:
    setup = loaded
    produce_inputs(setup.config, f"{setup.name}.in", 40)
    runner = StageRunner(setup.pipeline.get("work"), kafka=kafka(setup), settings=StageSettings())
    worker = threading.Thread(target=runner.run, kwargs={"idle_timeout_s": 120}, daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while (
            sum(
                max(o, 0)
                for o in committed(setup, f"{setup.name}.work", f"{setup.name}.in").values()
            )
            < 40
        ):
            assert time.monotonic() < deadline, "the stage did not process its input"
            time.sleep(0.3)
        refused = invoke(
            "replay", "reset", REFERENCE, "--stage", "work", "--to-earliest", "--execute"
        )
        assert refused.exit_code == 3, refused.output
        assert f"{setup.name}.work.0#" in refused.stderr  # the member, by its client.id
        assert "refused: group" in refused.stderr
        assert "hint: stop the stage's workers first" in refused.stderr
        assert committed(setup, f"{setup.name}.work", f"{setup.name}.in") != dict.fromkeys(
            range(PARTITIONS), 0
        )
    finally:
        runner.request_stop()
        worker.join(timeout=60)
    done = invoke("replay", "reset", REFERENCE, "--stage", "work", "--to-earliest", "--execute")
    assert done.exit_code == 0, done.output
    assert committed(setup, f"{setup.name}.work", f"{setup.name}.in") == dict.fromkeys(
        range(PARTITIONS), 0
    )


def _rows(setup: Setup) -> tuple[Counter[int], Counter[int]]:
    with Database(setup.database).connect() as db:
        everything = Counter(int(n) for (n,) in db.execute("SELECT n FROM rows_all").rows)
        keyed = Counter(int(n) for (n,) in db.execute("SELECT n FROM rows_keyed").rows)
    return everything, keyed


def _sink_until_idle(setup: Setup) -> None:
    runner = SinkRunner(
        setup.pipeline.get_sink("store"),
        kafka=kafka(setup),
        sink_settings=SinkSettings(database_url=setup.database),
    )
    runner.run(idle_timeout_s=4)


def test_a_sink_reset_rewrites_its_database_offsets_and_replays_each_row_once_more(
    loaded: Setup,
) -> None:
    setup = loaded
    produce_inputs(setup.config, f"{setup.name}.out", 60)
    _sink_until_idle(setup)
    assert _rows(setup) == (Counter(range(60)), Counter(range(60)))

    # the control: moving only the Kafka offsets is ignored, the sink resumes from its database
    admin = AdminClient(setup.config)
    back = [TopicPartition(f"{setup.name}.out", p, 0) for p in range(PARTITIONS)]
    group = f"{setup.name}.store"
    admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, back)])[group].result()
    _sink_until_idle(setup)
    assert _rows(setup) == (Counter(range(60)), Counter(range(60)))

    dry = invoke("replay", "reset", REFERENCE, "--stage", "store", "--to-earliest", "--json")
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.stdout)
    assert plan["kind"] == "sink"
    assert plan["database"] == setup.database
    # the database's offsets: each partition read to its end
    assert all(r["current"] == r["last_stable"] for r in plan["rows"])
    assert sum(r["current"] for r in plan["rows"]) == 60
    done = invoke("replay", "reset", REFERENCE, "--stage", "store", "--to-earliest", "--execute")
    assert done.exit_code == 0, done.output
    with Database(setup.database).connect() as db:
        assert set(read_offsets(db, group).values()) == {0}
    _sink_until_idle(setup)
    everything, keyed = _rows(setup)
    assert everything == Counter(dict.fromkeys(range(60), 2))  # replayed exactly once more
    assert keyed == Counter(range(60))  # the keyed table: no row twice


def test_a_backwards_reset_of_a_key_ordered_stage_that_keeps_its_retries_is_refused(
    cluster: Cluster,
    pipeline_topics: PipelineTopics,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = f"rk{uuid.uuid4().hex[:8]}"
    built = build(name, f"sqlite:///{tmp_path / 'rows.db'}", key_ordered=True)
    pipeline_topics(built)
    monkeypatch.setattr(replay_pipelines, "pipeline", built)
    config = cluster.client_config()
    produce_inputs(config, f"{name}.in", 200)  # every partition gets some
    group = f"{name}.work"
    ahead = [TopicPartition(f"{name}.in", p, 1) for p in range(PARTITIONS)]
    admin = AdminClient(config)  # kept: a collected client never completes its futures
    request = ConsumerGroupTopicPartitions(group, ahead)
    admin.alter_consumer_group_offsets([request])[group].result(timeout=30)
    refused = invoke("replay", "reset", REFERENCE, "--stage", "work", "--to-earliest")
    assert refused.exit_code == 3, refused.output
    assert "key-ordered retries" in refused.stderr
    assert "--retry-topics end" in refused.stderr
    for allowed in ("end", "reset"):
        plan = invoke(
            "replay",
            "reset",
            REFERENCE,
            "--stage",
            "work",
            "--to-earliest",
            "--retry-topics",
            allowed,
        )
        assert plan.exit_code == 0, plan.output
    forward = invoke("replay", "reset", REFERENCE, "--stage", "work", "--to-latest")
    assert forward.exit_code == 0, forward.output


def test_offsets_are_clamped_an_export_reads_back_and_shift_needs_a_commit(
    loaded: Setup, tmp_path: Path
) -> None:
    setup = loaded
    produce_inputs(setup.config, f"{setup.name}.in", 200)  # more than 3 per partition
    shift = invoke("replay", "reset", REFERENCE, "--stage", "work", "--shift-by", "-2")
    assert shift.exit_code == 1
    assert "has no committed offset to shift" in shift.stderr
    assert "hint:" in shift.stderr

    far = invoke("replay", "reset", REFERENCE, "--stage", "work", "--to-offset", "999", "--json")
    rows = json.loads(far.stdout)["rows"]
    assert all(r["new"] == r["last_stable"] > 3 for r in rows)
    assert [r["note"] for r in rows] == [f"999 clamped to [0, {r['last_stable']}]" for r in rows]

    export = invoke("replay", "reset", REFERENCE, "--stage", "work", "--to-offset", "3", "--export")
    assert export.exit_code == 0, export.output
    lines = export.stdout.strip().splitlines()
    assert lines == [f"{setup.name}.in,{p},3" for p in range(PARTITIONS)]  # topic,partition,offset
    plan = tmp_path / "plan.csv"
    plan.write_text(export.stdout)
    applied = invoke(
        "replay", "reset", REFERENCE, "--stage", "work", "--from-file", str(plan), "--execute"
    )
    assert applied.exit_code == 0, applied.output
    assert committed(setup, f"{setup.name}.work", f"{setup.name}.in") == dict.fromkeys(
        range(PARTITIONS), 3
    )
    shifted = invoke(
        "replay", "reset", REFERENCE, "--stage", "work", "--shift-by", "-2", "--execute"
    )
    assert shifted.exit_code == 0, shifted.output
    assert committed(setup, f"{setup.name}.work", f"{setup.name}.in") == dict.fromkeys(
        range(PARTITIONS), 1
    )
    both = invoke("replay", "reset", REFERENCE, "--stage", "work", "--to-earliest", "--to-latest")
    assert both.exit_code == 1
    assert "give exactly one reset mode" in both.stderr
