"""What one contender process is told to do, and the two files it writes back.

This module is imported by every contender process, including the ones that run under the
separate ``.bench-venv``, so it depends on the standard library only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Workload = Literal["raw", "avro"]


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One contender run: copy ``records`` records from ``input_topic`` to ``output_topic``.

    Every contender reads ``input_topic`` from the beginning with the fresh group ``group_id``
    and writes every record (key unchanged, value unchanged for "raw", re-encoded through the
    pydantic model for "avro") to ``output_topic``. Contenders that can stop by themselves do so
    after ``records`` input records; the harness sends SIGTERM to the others once its
    read_committed verifier has seen ``records`` output records.
    """

    contender: str
    workload: Workload
    bootstrap_servers: str
    input_topic: str
    output_topic: str
    partitions: int
    records: int
    group_id: str
    transactional_id: str
    # consume(num_messages=...) batch size of the baselines.
    consume_batch: int
    # A transaction is committed after this many records (0 = no record bound) ...
    txn_max_records: int
    # ... or when it has been open this long, whichever comes first.
    txn_interval_s: float
    # Producer linger for every contender, so no one wins by batching longer.
    linger_ms: int
    # retry.backoff.ms for the librdkafka contenders (b1, b2, quix; faust's aiokafka does not
    # expose it); None keeps librdkafka's default of 100 ms.
    retry_backoff_ms: int | None
    # fetch.queue.backoff.ms for the librdkafka consumers; None keeps the default of 1000 ms,
    # which makes a consumer draining a backlog wait up to 1 s for each refill of its queue.
    fetch_queue_backoff_ms: int | None
    schema_registry_url: str
    # Confluent schema id of the "avro" records; None for "raw".
    schema_id: int | None
    # The contender writes time.monotonic() here when it has consumed its first input record.
    # CLOCK_MONOTONIC is system-wide on Linux, so the harness can compare it with its own clock.
    marker_path: str
    # The contender (and bench.child) may write a JSON object of facts here: versions, counters.
    report_path: str
    work_dir: str
    # raw librdkafka settings for the consumers and producers (--consumer-setting, ...);
    # the contenders that use librdkafka apply them on top of their own settings
    consumer_settings: dict[str, str] = dataclasses.field(default_factory=dict)
    producer_settings: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls(**json.loads(text))

    def mark_first_record(self) -> None:
        """Record when the first input record was consumed (later calls are cheap)."""
        FirstRecordMarker(self.marker_path).mark()

    def add_report(self, **facts: Any) -> None:
        """Merge ``facts`` into the report file (written atomically)."""
        path = Path(self.report_path)
        current: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        current.update(facts)
        write_atomically(path, json.dumps(current, indent=2, sort_keys=True, default=str))


class FirstRecordMarker:
    """Writes the first-record timestamp once; every later ``mark()`` costs one attribute test."""

    __slots__ = ("_path", "pending")

    def __init__(self, path: str) -> None:
        self._path = path
        self.pending = True

    def mark(self) -> None:
        if self.pending:
            self.pending = False
            write_atomically(Path(self._path), repr(time.monotonic()))


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` so that a reader polling ``path`` never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def read_marker(path: Path) -> float | None:
    """The monotonic time a contender wrote to its marker file, or None if not there yet."""
    try:
        return float(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
