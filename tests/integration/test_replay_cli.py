"""Bad input to `streams dlq` and `streams replay`: one clear line, a hint, nothing written.

Tested twice (STYLE rule 10): in-process with CliRunner for the arguments and exit codes, and
as subprocesses against the real broker, reading their `--json`.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
from click.testing import CliRunner, Result
from confluent_kafka import Consumer, TopicPartition

from streams import headers as h
from streams.cli.main import cli
from tests.integration import replay_pipelines
from tests.integration.eos import ROOT
from tests.integration.replay_fixtures import replay_setup
from tests.integration.replay_pipelines import PARTITIONS, Setup, dead_letters

pytestmark = pytest.mark.integration

__all__ = ["replay_setup"]

REFERENCE = "tests.integration.replay_pipelines:pipeline"
STREAMS = str(ROOT / ".venv" / "bin" / "streams")


@pytest.fixture
def loaded(replay_setup: Setup, monkeypatch: pytest.MonkeyPatch) -> Setup:
    monkeypatch.setattr(replay_pipelines, "pipeline", replay_setup.pipeline)
    return replay_setup


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _one_error(result: Result, code: int, text: str) -> None:
    """Exit ``code``; stderr is one `error:`/`refused:` line naming ``text`` and a hint."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("reading ")]
    word = "refused" if code == 3 else "error"
    assert lines[0].startswith(f"{word}: "), lines
    assert text in lines[0], lines
    assert any(line.startswith("hint: ") for line in lines[1:]), lines


def _high_watermarks(setup: Setup, topic: str) -> list[int]:
    consumer = Consumer({**setup.config, "group.id": f"hw-{uuid.uuid4().hex}"})
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)
        ]
    finally:
        consumer.close()


def test_bad_arguments_get_one_line_and_a_hint_in_process(loaded: Setup) -> None:
    stage = ["--stage", "work"]
    _one_error(invoke("dlq", "ls", REFERENCE, "--stage", "nosuch"), 1, "has no stage 'nosuch'")
    _one_error(
        invoke("dlq", "ls", REFERENCE, *stage, "--dlq", "no.such.dlq"),
        1,
        "DLQ topic no.such.dlq does not exist",
    )
    _one_error(
        invoke("dlq", "redrive", REFERENCE, *stage, "--since", "yesterday"),
        1,
        "'yesterday' is not a time",
    )
    _one_error(
        invoke("dlq", "redrive", REFERENCE, *stage, "--offsets", "0:9-3"), 1, "TO is before FROM"
    )
    _one_error(
        invoke("dlq", "redrive", REFERENCE, *stage, "--header", "novalue"), 1, "is not NAME=VALUE"
    )
    _one_error(
        invoke("dlq", "status", REFERENCE, *stage, "redrive-nosuch"),
        1,
        "has no task 'redrive-nosuch'",
    )
    _one_error(
        invoke("replay", "reset", REFERENCE, *stage, "--by-duration", "2 hours"),
        1,
        "is not a duration",
    )
    _one_error(invoke("dlq", "redrive", REFERENCE, "--stage", "store"), 1, "is a sink")
    unknown = invoke("dlq", "redrive", REFERENCE, *stage, "--to", "somewhere.else")
    _one_error(unknown, 3, "somewhere.else is not a topic of pipeline")


def test_a_redrive_to_an_input_that_was_deleted_is_refused_and_writes_nothing(
    loaded: Setup,
) -> None:
    setup = loaded
    dead_letters(setup.config, setup.name, 8, source="gone.topic")  # names a deleted input
    before = _high_watermarks(setup, f"{setup.name}.work.retry.500ms")
    refused = invoke(
        "dlq",
        "redrive",
        REFERENCE,
        "--stage",
        "work",
        "--to",
        "input",
        "--allow-topic",
        "gone.topic",
        "--execute",
    )
    _one_error(refused, 3, "destination topic gone.topic does not exist")
    assert "task " not in refused.stdout  # no task was started
    assert _high_watermarks(setup, f"{setup.name}.work.retry.500ms") == before


def test_records_with_garbage_headers_are_skipped_as_unroutable_and_said_so(
    loaded: Setup,
) -> None:
    setup = loaded
    from confluent_kafka import Producer  # noqa: PLC0415

    producer = Producer(setup.config)
    garbage: list[tuple[str, str | bytes | None]] = [
        (h.ORIGINAL_TOPIC, b"\xff\xfe"),
        (h.ORIGINAL_PARTITION, b"x"),
        ("z", b"\x00"),
    ]
    for n in range(3):
        producer.produce(setup.dlq, b"v", b"k", partition=n, headers=garbage)
    assert producer.flush(10) == 0
    result = invoke("dlq", "redrive", REFERENCE, "--stage", "work", "--execute")
    assert result.exit_code == 0, result.output
    assert "3 records skipped: unroutable" in result.stdout
    assert "nothing to move: no task was started" in result.stdout
    assert any(
        line.startswith("hint: records without valid streams.original")
        for line in result.stderr.splitlines()
    )


def _json(setup: Setup, *args: str) -> tuple[int, object, str]:
    done = subprocess.run(
        [STREAMS, *args, "--json"],
        env=setup.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    payload = json.loads(done.stdout) if done.stdout.strip() else None
    return done.returncode, payload, done.stderr


def test_the_commands_as_subprocesses_read_through_their_json(replay_setup: Setup) -> None:
    setup = replay_setup
    dead_letters(setup.config, setup.name, 12)
    stage = ["--stage", "work"]
    code, listed, _ = _json(setup, "dlq", "ls", REFERENCE, *stage)
    assert code == 0
    assert isinstance(listed, dict)
    assert (listed["selected"], listed["pending"], listed["redriven"]) == (12, 12, 0)

    code, plan, _ = _json(setup, "dlq", "redrive", REFERENCE, *stage, "--to", "input")
    assert code == 0
    assert isinstance(plan, dict)
    assert (plan["to_move"], plan["executed"], plan["refused"]) == (12, False, False)

    code, done, _ = _json(setup, "dlq", "redrive", REFERENCE, *stage, "--to", "input", "--execute")
    assert code == 0
    assert isinstance(done, dict)
    assert done["result"]["status"] == "COMPLETED"
    task = done["result"]["task"]

    code, refused, stderr = _json(setup, "dlq", "redrive", REFERENCE, *stage, "--to", "input")
    assert code == 3
    assert isinstance(refused, dict)
    assert refused["refused"] is True
    assert "were redriven before" in refused["refusals"][0]
    assert stderr.splitlines()[0].startswith("refused: ")

    code, status, _ = _json(setup, "dlq", "status", REFERENCE, *stage, task)
    assert code == 0
    assert isinstance(status, dict)
    assert (status["status"], status["moved"], status["to_move"]) == ("COMPLETED", 12, 12)
    code, tasks, _ = _json(setup, "dlq", "tasks", REFERENCE, *stage)
    assert isinstance(tasks, list)
    assert [t["task"] for t in tasks] == [task]
    code, _, stderr = _json(setup, "dlq", "cancel", REFERENCE, *stage, task)
    assert code == 3  # only a running or interrupted task can be cancelled
    assert "COMPLETED" in stderr

    code, missing, stderr = _json(setup, "dlq", "ls", REFERENCE, "--stage", "nosuch")
    assert (code, missing) == (1, None)
    assert stderr.startswith("error: ")
