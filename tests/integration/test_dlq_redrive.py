"""`streams dlq redrive` on the real broker: SIGKILLed and resumed, the ledger, the loop guard.

A fresh read_committed reader checks what a redrive wrote against what the DLQ held, byte for
byte: key, value, the record's own headers in order (duplicates included), the original
coordinates, the provenance, the original partition and timestamp.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streams import headers as h
from streams.config import KafkaSettings, StageSettings
from streams.replay import Plan, RedriveRequest, Status, Task, execute, plan_redrive
from streams.replay.ledger import read_ledger
from streams.stage import StageRunner
from tests.integration.eos import ROOT, read_topic
from tests.integration.replay_fixtures import replay_setup
from tests.integration.replay_pipelines import (
    PARTITIONS,
    Letter,
    Setup,
    dead_letters,
    produce_inputs,
)

pytestmark = pytest.mark.integration

__all__ = ["replay_setup"]

REFERENCE = "tests.integration.replay_pipelines:pipeline"
STREAMS = str(ROOT / ".venv" / "bin" / "streams")


def kafka(setup: Setup) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=setup.config["bootstrap.servers"])


def expected_headers(letter: Letter, task_id: str, count: int, dlq: str) -> list[tuple[str, bytes]]:
    topic, partition, offset = letter.original
    return [
        *letter.own,
        (h.ORIGINAL_TOPIC, topic.encode()),
        (h.ORIGINAL_PARTITION, str(partition).encode()),
        (h.ORIGINAL_OFFSET, str(offset).encode()),
        (h.ORIGINAL_TIMESTAMP, str(letter.timestamp_ms).encode()),
        (h.REPLAYED, task_id.encode()),
        (h.REPLAY_SOURCE, f"{dlq}/{letter.n % PARTITIONS}@{letter.n // PARTITIONS}".encode()),
        (h.REPLAY_COUNT, str(count).encode()),
        (h.REPLAY_PRIOR_REASON, b"retries-exhausted"),
    ]


def _task_of(setup: Setup, deadline_s: float = 60) -> str:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        found = [t for t in read_ledger(kafka(setup)).tasks.values() if t.source == setup.dlq]
        if found:
            return found[0].id
        time.sleep(0.2)
    raise AssertionError("the redrive never recorded its task")


def _moved(setup: Setup, task_id: str) -> int:
    return read_ledger(kafka(setup)).tasks[task_id].moved


@pytest.mark.slow
def test_a_redrive_sigkilled_5_times_and_resumed_moves_each_record_exactly_once(
    replay_setup: Setup, tmp_path: Path
) -> None:
    setup = replay_setup
    stack = contextlib.ExitStack()
    letters = dead_letters(setup.config, setup.name, 10_000)
    base = [
        STREAMS,
        "dlq",
        "redrive",
        REFERENCE,
        "--stage",
        "work",
        "--to",
        "input",
        "--timestamp",
        "original",
    ]
    log = stack.enter_context((tmp_path / "redrive.log").open("ab"))
    command = [*base, "--rate", "1000", "--execute"]
    process = subprocess.Popen(command, env=setup.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        task_id = _task_of(setup)
        kills = 0
        while kills < 5:
            at_start = _moved(setup, task_id)
            deadline = time.monotonic() + 60
            while _moved(setup, task_id) < at_start + 700:
                assert process.poll() is None, (tmp_path / "redrive.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "the redrive stopped moving"
                time.sleep(0.1)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            kills += 1
            resume = [*base, "--resume", task_id, "--execute"]
            process = subprocess.Popen(resume, env=setup.env, stdout=log, stderr=subprocess.STDOUT)
        assert process.wait(timeout=180) == 0, (tmp_path / "redrive.log").read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        stack.close()

    task = read_ledger(kafka(setup)).tasks[task_id]
    assert task.status is Status.COMPLETED
    assert (task.moved, task.to_move, sum(task.skipped.values())) == (10_000, 10_000, 0)
    found = read_topic(setup.config, f"{setup.name}.in", PARTITIONS)
    sources = Counter(h.get(list(m.headers()), h.REPLAY_SOURCE) for m in found)
    assert len(found) == 10_000, f"{len(found)} records, {len(sources)} distinct"
    assert max(sources.values()) == 1
    by_n = {int(m.value()): m for m in found}
    assert set(by_n) == {letter.n for letter in letters}
    for letter in letters:
        message = by_n[letter.n]
        assert (message.key(), message.value()) == (letter.key, letter.value)
        assert message.partition() == letter.original[1]  # its original partition
        assert message.timestamp()[1] == letter.timestamp_ms
        assert list(message.headers()) == expected_headers(letter, task_id, 1, setup.dlq)
    per_partition: dict[int, list[int]] = {}
    for message in found:
        per_partition.setdefault(message.partition(), []).append(int(message.value()))
    assert all(values == sorted(values) for values in per_partition.values())
    # the control: the kills did land inside open transactions, which were aborted
    uncommitted = read_topic(
        setup.config, f"{setup.name}.in", PARTITIONS, isolation="read_uncommitted", idle_polls=3
    )
    assert len(uncommitted) > len(found), "no kill aborted a transaction: nothing was tested"


def _redrive(setup: Setup, request: RedriveRequest) -> tuple[Plan, Task | None]:
    plan = plan_redrive(setup.pipeline, "work", request, kafka=kafka(setup))
    return plan, None if plan.refused else execute(plan, kafka=kafka(setup))


def test_a_dlq_deleted_and_created_again_is_not_refused_for_the_old_topics_redrives(
    replay_setup: Setup,
) -> None:
    """The ledger's repeat rule is per topic, not per name: the offsets of a DLQ created again
    under the same name were covered by no earlier redrive (the control: before the topic is
    created again, the same redrive is refused)."""
    setup = replay_setup
    dead_letters(setup.config, setup.name, 12)
    _plan, first = _redrive(setup, RedriveRequest(to="input"))
    assert first is not None
    assert first.status is Status.COMPLETED
    assert first.source_topic_id
    repeat, _ = _redrive(setup, RedriveRequest(to="input"))
    assert repeat.refused, "the control: a repeat on the same topic is refused"

    admin = AdminClient(setup.config)
    admin.delete_topics([setup.dlq])[setup.dlq].result(timeout=30)
    deadline = time.monotonic() + 60
    while True:
        try:
            new = NewTopic(setup.dlq, num_partitions=PARTITIONS, replication_factor=1)
            admin.create_topics([new])[setup.dlq].result(timeout=30)
            break
        except KafkaException:  # still being deleted
            assert time.monotonic() < deadline, "the DLQ was not created again"
            time.sleep(0.5)
    dead_letters(setup.config, setup.name, 12)
    plan, second = _redrive(setup, RedriveRequest(to="input"))
    assert not plan.refused, plan.refusals
    assert second is not None
    assert second.moved == 12
    assert second.source_topic_id not in {None, first.source_topic_id}


def test_the_ledger_refuses_a_repeat_and_again_counts_up(replay_setup: Setup) -> None:
    setup = replay_setup
    letters = dead_letters(setup.config, setup.name, 20)
    _plan, first = _redrive(setup, RedriveRequest(to="input"))
    assert first is not None
    assert first.status is Status.COMPLETED

    repeat, ran = _redrive(setup, RedriveRequest(to="input"))
    assert ran is None
    assert repeat.refused
    assert "20 selected records were redriven before" in repeat.refusals[0]
    assert first.id in repeat.refusals[0]

    skipped, nothing = _redrive(setup, RedriveRequest(to="input", skip_redriven=True))
    assert nothing is None  # nothing to move: no task
    assert skipped.skipped == {"already-redriven": 20}

    _plan, again = _redrive(setup, RedriveRequest(to="input", again=True))
    assert again is not None
    assert again.moved == 20
    found = read_topic(setup.config, f"{setup.name}.in", PARTITIONS)
    counts = Counter(h.get(list(m.headers()), h.REPLAY_COUNT) for m in found)
    assert counts == {b"1": 20, b"2": 20}
    # the idempotency key (the original coordinates) did not change
    keys = Counter(h.original_coordinates(list(m.headers())) for m in found)
    assert set(keys.values()) == {2}
    assert set(keys) == {letter.original for letter in letters}


def _dead_letter_everything(setup: Setup) -> None:
    """Run the stage (REPLAY_FAIL=1: every record dead-lettered) until it is idle."""
    runner = StageRunner(setup.pipeline.get("work"), kafka=kafka(setup), settings=StageSettings())
    runner.run(idle_timeout_s=4)


def test_the_loop_guard_stops_a_record_that_fails_every_time(
    replay_setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redriven into a stage that always fails, a record is redriven --max-redrives (3) times."""
    setup = replay_setup
    monkeypatch.setenv("REPLAY_FAIL", "1")
    produce_inputs(setup.config, f"{setup.name}.in", 5)
    _dead_letter_everything(setup)
    rounds = []
    for _ in range(4):
        plan, task = _redrive(setup, RedriveRequest(to="first-retry", skip_redriven=True))
        rounds.append((plan.to_move, dict(plan.skipped)))
        if task is not None:
            _dead_letter_everything(setup)
    # Round 4 sees four generations of dead letters: the first two (redriven once, by the
    # ledger) are already redriven; the third was redriven twice before it came back and once
    # since, the fourth three times: both reached --max-redrives 3, and nothing moves.
    assert rounds == [
        (5, {}),
        (5, {"already-redriven": 5}),
        (5, {"already-redriven": 10}),
        (0, {"already-redriven": 10, "max-redrives": 10}),
    ]
    dead = read_topic(setup.config, setup.dlq, PARTITIONS)
    counts = Counter(h.get(list(m.headers()), h.REPLAY_COUNT) for m in dead)
    assert counts == {None: 5, b"1": 5, b"2": 5, b"3": 5}
    # the control: with a higher cap the same records would move again
    request = RedriveRequest(to="first-retry", skip_redriven=True, max_redrives=10)
    assert plan_redrive(setup.pipeline, "work", request, kafka=kafka(setup)).to_move == 5
