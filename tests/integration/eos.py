"""Helpers for exactly-once tests: numbered input, a read_committed reader, the checker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from streams.exceptions import TransactionError
from streams.kafka.transaction import Transaction
from streams.stage import StageRunner
from tests.integration.conftest import Cluster

ROOT = Path(__file__).resolve().parents[2]


def read_topic(
    config: dict[str, Any],
    topic: str,
    partitions: int,
    *,
    isolation: str = "read_committed",
    idle_polls: int = 6,
    deadline_s: float = 60.0,
) -> list[Any]:
    """Every record of ``topic`` from the start to its end as ``isolation`` sees it.

    The end (the last stable offset for read_committed, else the high watermark) is read
    first; the reader goes on until its position reached it on every partition and then
    ``idle_polls`` half-second polls came back empty (records written meanwhile are read too).
    An empty poll alone never ends it: on a loaded machine the first fetch of a large record
    took longer than a few idle polls, and the record was missed. ``config`` holds the client
    settings (``bootstrap.servers``...); errors are left out.
    """
    consumer = Consumer(
        {
            **config,
            "group.id": f"read-{uuid.uuid4().hex}",
            "isolation.level": isolation,
            "enable.auto.commit": False,
        }
    )
    assigned = [TopicPartition(topic, p, 0) for p in range(partitions)]
    ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in assigned]
    consumer.assign(assigned)
    found: list[Any] = []
    idle = 0
    deadline = time.monotonic() + deadline_s
    while idle < idle_polls and time.monotonic() < deadline:
        batch = consumer.consume(1000, timeout=0.5)
        found.extend(m for m in batch if m.error() is None)
        if batch:
            idle = 0
            continue
        positions = consumer.position(assigned)
        reached = all(tp.offset >= end or end <= 0 for tp, end in zip(positions, ends, strict=True))
        idle = idle + 1 if reached else 0
    consumer.close()
    return found


def produce_numbered(
    cluster: Cluster, topic: str, count: int, *, keys: int = 50, first: int = 0
) -> None:
    """Values b'first'..b'first+count-1' with keys over a small key set (per-key order)."""
    producer = Producer(cluster.client_config(**{"enable.idempotence": True, "linger.ms": 5}))
    for n in range(first, first + count):
        while True:
            try:
                producer.produce(topic, str(n).encode(), key=f"k{n % keys}".encode())
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0


def open_transaction(config: dict[str, Any], topic: str, partitions: int) -> bool:
    """True while a transaction holds records on ``topic`` (high watermark above the LSO)."""
    committed = Consumer({**config, "group.id": "lso-probe", "isolation.level": "read_committed"})
    uncommitted = Consumer(
        {**config, "group.id": "hw-probe", "isolation.level": "read_uncommitted"}
    )
    try:
        for p in range(partitions):
            tp = TopicPartition(topic, p)
            lso = committed.get_watermark_offsets(tp, timeout=10)[1]
            hw = uncommitted.get_watermark_offsets(tp, timeout=10)[1]
            if hw > lso:
                return True
        return False
    finally:
        committed.close()
        uncommitted.close()


@dataclass
class ReadResult:
    values: list[int] = field(default_factory=list)
    by_partition: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    by_key: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))


def read_committed(
    cluster: Cluster, topic: str, partitions: int, *, expect: int, timeout_s: float = 120
) -> ReadResult:
    """Read the whole topic with read_committed until `expect` records or quiet for 5 s."""
    import time  # noqa: PLC0415

    consumer = Consumer(
        cluster.client_config(
            **{
                "group.id": f"verify-{uuid.uuid4().hex}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    result = ReadResult()
    deadline = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        batch = consumer.consume(num_messages=1000, timeout=0.5)
        if not batch:
            if len(result.values) >= expect and time.monotonic() - quiet_since > 3:
                break
            continue
        quiet_since = time.monotonic()
        for message in batch:
            assert message.error() is None, message.error()
            raw_value = message.value() or b"-1"
            value = int(raw_value) if raw_value.isdigit() else -1
            result.values.append(value)
            result.by_partition[message.partition() or 0].append(value)
            result.by_key[(message.key() or b"").decode()].append(value)
    consumer.close()
    return result


def check_exactly_once(result: ReadResult, count: int, *, keys: int = 50) -> None:
    """Every input exactly once, and each key's values in increasing order."""
    seen: defaultdict[int, int] = defaultdict(int)
    for value in result.values:
        seen[value] += 1
    duplicates = sorted(v for v, n in seen.items() if n > 1)
    missing = sorted(set(range(count)) - set(seen))
    assert not duplicates, f"{len(duplicates)} duplicates, first {duplicates[:10]}"
    assert not missing, f"{len(missing)} lost, first {missing[:10]}"
    assert len(result.values) == count
    for key, values in result.by_key.items():
        assert values == sorted(values), f"key {key} out of order"
    assert len(result.by_key) == min(keys, count)


def start_worker(
    env: dict[str, str], stage: str, slot: int, *, log: Path, extra: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams.runtime.worker",
                "tests.integration.pipelines:copy",
                "--stage",
                stage,
                "--slot",
                str(slot),
                *extra,
            ],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


class _AbortEveryThird(Transaction):
    """A transaction whose every third commit fails as abortable, after its records went out.

    The stage's own recovery (``streams.stage.recovery``) then aborts it for real and rewinds,
    as it does for an abortable error from the broker: the same production path.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.attempts = 0

    def commit(self, offsets: Any, group_metadata: Any) -> None:
        self.attempts += 1
        if self.attempts % 3 == 0:
            self._producer.flush(10)  # the doomed records reach the broker, then get aborted
            raise TransactionError("injected: every third commit is abortable", requires_abort=True)
        super().commit(offsets, group_metadata)


class AbortEveryThirdRunner(StageRunner):
    """Aborts every third transaction after producing its records, like Kafka's copier test."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._txn: _AbortEveryThird | None = None

    @property
    def attempts(self) -> int:
        return 0 if self._txn is None else self._txn.attempts

    @property
    def doomed(self) -> bool:
        return (self.attempts + 1) % 3 == 0

    def _transaction(self, on_rejected: Any, limits: Any) -> Transaction:
        self._txn = _AbortEveryThird(
            self._producer_config(limits),
            deadline_s=self.settings.transaction_deadline_s,
            on_rejected=on_rejected,
        )
        return self._txn
