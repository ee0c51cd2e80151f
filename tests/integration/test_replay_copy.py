"""`streams replay copy` on the real broker: a time range, record for record.

The set of (partition, offset, key, value, headers, timestamp) the copy wrote (offsets read
from its provenance header, headers without it) must equal the source range as a plain
consumer sees it: from the first record at or after --since, to the first at or after --until
in each partition.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from click.testing import CliRunner, Result
from confluent_kafka import Producer

from streams import headers as h
from streams.cli.main import cli
from tests.integration import replay_pipelines
from tests.integration.conftest import TopicFactory
from tests.integration.eos import read_topic
from tests.integration.replay_fixtures import replay_setup
from tests.integration.replay_pipelines import PARTITIONS, Setup

pytestmark = pytest.mark.integration

__all__ = ["replay_setup"]

REFERENCE = "tests.integration.replay_pipelines:pipeline"
Row = tuple[int, int, bytes, bytes, tuple[tuple[str, bytes], ...], int]


@pytest.fixture
def loaded(replay_setup: Setup, monkeypatch: pytest.MonkeyPatch) -> Setup:
    monkeypatch.setattr(replay_pipelines, "pipeline", replay_setup.pipeline)
    return replay_setup


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _produce(config: dict[str, Any], topic: str, base_ms: int, count: int) -> None:
    producer = Producer({**config, "enable.idempotence": True, "linger.ms": 5})
    for n in range(count):
        found: list[tuple[str, str | bytes | None]] = [
            ("n", str(n).encode()),
            ("dup", b"x"),
            ("dup", b"y"),
        ]
        producer.produce(
            topic,
            str(n).encode(),
            f"k{n % 7}".encode(),
            headers=found,
            timestamp=base_ms + n * 1000,
        )
    assert producer.flush(30) == 0


def _range(found: list[Any], since_ms: int, until_ms: int) -> set[Row]:
    """kcat's -o s@since -o e@until over what a plain consumer read."""
    rows: set[Row] = set()
    for p in range(PARTITIONS):
        records = sorted((m for m in found if m.partition() == p), key=lambda m: m.offset())
        for m in records:
            stamp = m.timestamp()[1]
            if stamp >= until_ms:
                break
            if stamp >= since_ms:
                rows.add((p, m.offset(), m.key(), m.value(), tuple(m.headers() or ()), stamp))
    return rows


def test_a_copy_writes_exactly_the_time_range_record_for_record(loaded: Setup) -> None:
    setup = loaded
    source, destination = f"{setup.name}.in", f"{setup.name}.out"
    base = time.time_ns() // 1_000_000 - 1_800_000  # 30 minutes ago
    _produce(setup.config, source, base, 300)
    since, until = base + 100_000, base + 200_000
    args = [
        "replay",
        "copy",
        REFERENCE,
        "--from",
        source,
        "--to",
        destination,
        "--since",
        _iso(since),
        "--until",
        _iso(until),
    ]
    plan = json.loads(invoke(*args, "--json").stdout)
    done = invoke(*args, "--execute", "--json")
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)["result"]
    assert result["status"] == "COMPLETED"

    expected = _range(read_topic(setup.config, source, PARTITIONS), since, until)
    copied: set[Row] = set()
    for m in read_topic(setup.config, destination, PARTITIONS):
        found = list(m.headers())
        assert found[-2:][0] == (h.REPLAYED, result["task"].encode())
        origin = found[-1][1].decode()  # streams.replay.source: topic/partition@offset
        partition, offset = origin.removeprefix(f"{source}/").split("@")
        assert m.partition() == int(partition), "the copy kept the partition"
        copied.add(
            (int(partition), int(offset), m.key(), m.value(), tuple(found[:-2]), m.timestamp()[1])
        )
    assert copied == expected
    assert 0 < len(copied) < 300  # the control: the range left records out
    assert plan["to_move"] == result["moved"] == len(expected)

    again = invoke(*args)
    assert again.exit_code == 3, again.output
    assert "were copied before" in again.stderr
    assert invoke(*args, "--again").exit_code == 0


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def test_a_copy_to_a_topic_with_other_partition_counts_is_refused_unless_by_key(
    loaded: Setup, topic_factory: TopicFactory
) -> None:
    setup = loaded
    source = f"{setup.name}.in"
    _produce(setup.config, source, time.time_ns() // 1_000_000 - 60_000, 10)
    narrow = topic_factory("narrow", partitions=2)
    args = ["replay", "copy", REFERENCE, "--from", source, "--to", narrow]
    outside = invoke(*args, "--by-key")
    assert outside.exit_code == 3
    assert f"{narrow} is not a topic of pipeline" in outside.stderr
    refused = invoke(*args, "--allow-topic", narrow)
    assert refused.exit_code == 3
    assert "cannot keep its partition" in refused.stderr
    assert "--by-key" in refused.stderr
    by_key = invoke(*args, "--allow-topic", narrow, "--by-key", "--execute", "--json")
    assert by_key.exit_code == 0, by_key.output
    assert len(read_topic(setup.config, narrow, 2)) == 10
