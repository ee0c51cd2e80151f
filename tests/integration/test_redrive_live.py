"""A redrive into a stage that is running and being SIGKILLed: the chaos invariants hold.

2,000 dead letters are redriven ``--to first-retry`` (so they re-enter the stage's own
transactional path) while 4,000 new records flow into the stage's input and the stage's worker
is SIGKILLed and restarted. A read_committed reader runs throughout. ``tests.chaos.checker``
then checks the history: every input (new or redriven) in the output exactly once, keys kept,
per-key order as a retry promises it, nothing the concurrent reader saw aborted, no transaction
left open; and the stage dead-lettered nothing new. The sink is not run here (its invariant is
left out of the check).

The control: a read_uncommitted reader finds more records than the read_committed one, so the
kills did land inside open transactions (else the test would prove nothing).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.chaos.checker import History, Observed, check
from tests.integration.eos import ROOT, read_topic
from tests.integration.replay_fixtures import replay_setup
from tests.integration.replay_pipelines import PARTITIONS, Setup, dead_letters, produce_inputs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

__all__ = ["replay_setup"]

REFERENCE = "tests.integration.replay_pipelines:pipeline"
STREAMS = str(ROOT / ".venv" / "bin" / "streams")
REDRIVEN = 2_000
LIVE = 4_000
KILLS = 3


@dataclass
class _Reader:
    """A read_committed reader of the stage's output, running while the kills happen."""

    config: dict[str, Any]
    topic: str
    seen: list[Observed] = field(default_factory=list)
    seen_at: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        consumer = Consumer(
            {
                **self.config,
                "group.id": f"redrive-live-{uuid.uuid4().hex}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        consumer.assign([TopicPartition(self.topic, p, 0) for p in range(PARTITIONS)])
        while not self.stop.is_set():
            for message in consumer.consume(500, timeout=0.5):
                if message.error() is None:
                    self.seen.append(_observed(message))
                    self.seen_at.append(time.monotonic())
        consumer.close()


def _observed(message: Any) -> Observed:
    return Observed(
        int(message.value()), (message.key() or b"").decode(), message.partition(), message.offset()
    )


def _worker_env(setup: Setup) -> dict[str, str]:
    return {
        **setup.env,
        "STREAMS_BOOTSTRAP_SERVERS": setup.config["bootstrap.servers"],
        "STREAMS_STAGE_STATIC_MEMBERSHIP": "1",
        "STREAMS_STAGE_SESSION_TIMEOUT_MS": "15000",
        # longer transactions, so that kills land inside an open one
        "STREAMS_STAGE_BATCH_MAX_MS": "500",
    }


@contextlib.contextmanager
def _logged(path: Path) -> Iterator[Any]:
    with path.open("ab") as log:
        yield log


def _start_worker(setup: Setup, log: Any) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "streams.runtime.worker", REFERENCE, "--stage", "work"]
    return subprocess.Popen(
        [*command, "--slot", "0"], cwd=ROOT, env=_worker_env(setup), stdout=log, stderr=log
    )


def _feed(setup: Setup, stop: threading.Event) -> None:
    """The live inputs, 500 at a time, while the redrive runs."""
    for first in range(REDRIVEN, REDRIVEN + LIVE, 500):
        if stop.is_set():
            return
        produce_inputs(setup.config, f"{setup.name}.in", 500, first=first)
        time.sleep(1.0)


def _stable_and_high(config: dict[str, Any], topic: str) -> dict[tuple[str, int], tuple[int, int]]:
    committed = Consumer({**config, "group.id": "lso", "isolation.level": "read_committed"})
    uncommitted = Consumer({**config, "group.id": "hw", "isolation.level": "read_uncommitted"})
    try:
        return {
            (topic, p): (
                committed.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1],
                uncommitted.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1],
            )
            for p in range(PARTITIONS)
        }
    finally:
        committed.close()
        uncommitted.close()


def _wait_for_progress(reader: _Reader, more: int, deadline_s: float) -> None:
    """Until the reader has seen ``more`` records more than now."""
    start = len(reader.seen)
    deadline = time.monotonic() + deadline_s
    while len(reader.seen) < start + more:
        assert time.monotonic() < deadline, "the stage wrote nothing new"
        time.sleep(0.1)


def _wait_for_output(reader: _Reader, count: int, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and len({o.n for o in reader.seen}) < count:
        time.sleep(0.5)


def test_a_redrive_into_a_stage_being_sigkilled_keeps_every_invariant(
    replay_setup: Setup, tmp_path: Path
) -> None:
    setup = replay_setup
    out = f"{setup.name}.out"
    dead_letters(setup.config, setup.name, REDRIVEN)
    log_path = tmp_path / "run.log"
    reader = _Reader(setup.config, out)
    reading = threading.Thread(target=reader.run, daemon=True)
    reading.start()
    stop_feed = threading.Event()
    feeding = threading.Thread(target=_feed, args=(setup, stop_feed), daemon=True)
    kill_times: list[float] = []
    with _logged(log_path) as log:
        worker = _start_worker(setup, log)
        redrive = subprocess.Popen(
            [STREAMS, "dlq", "redrive", REFERENCE, "--stage", "work", "--rate", "100", "--execute"],
            env=setup.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        feeding.start()
        try:
            for _ in range(KILLS):
                # each worker gets its partitions and writes before it is killed (a new one
                # first waits for the offsets its killed predecessor's transaction held)
                _wait_for_progress(reader, 200, deadline_s=90)
                time.sleep(0.3)
                assert redrive.poll() is None, "the redrive ended before the kills: no test"
                worker.send_signal(signal.SIGKILL)
                worker.wait(timeout=30)
                kill_times.append(time.monotonic())
                worker = _start_worker(setup, log)
            assert redrive.wait(timeout=120) == 0, log_path.read_text()[-3000:]
            feeding.join(timeout=60)
            _wait_for_output(reader, REDRIVEN + LIVE, deadline_s=120)
        finally:
            stop_feed.set()
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
            if redrive.poll() is None:
                redrive.kill()
            reader.stop.set()
            reading.join(timeout=30)

    outputs = [_observed(m) for m in read_topic(setup.config, out, PARTITIONS)]
    history = History(
        inputs={n: f"k{n % 50}" for n in range(REDRIVEN + LIVE)},
        outputs=outputs,
        dead=[],
        sink_rows=[],
        concurrent=reader.seen,
        concurrent_during_faults=sum(
            1 for at in reader.seen_at if kill_times[0] <= at <= kill_times[-1]
        ),
        retried=set(range(REDRIVEN)),  # the redriven records came in through the retry tier
        offsets=_stable_and_high(setup.config, out),
    )
    violations = [v for v in check(history) if v.kind != "sink"]
    assert violations == [], "\n".join(map(str, violations)) + log_path.read_text()[-2000:]
    # the stage dead-lettered nothing new: the DLQ holds the 2,000 letters it was given
    assert len(read_topic(setup.config, setup.dlq, PARTITIONS)) == REDRIVEN
    # the control: the kills aborted open transactions of the stage
    uncommitted = read_topic(setup.config, out, PARTITIONS, isolation="read_uncommitted")
    assert len(uncommitted) > len(outputs), "no kill aborted a transaction: nothing was tested"
