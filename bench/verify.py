"""The read_committed verifier, and the watcher that says when the last output was committed.

The end of the measured window is taken from the last stable offset (LSO), polled with
ListOffsets(READ_COMMITTED): the first moment at which every partition's LSO reached its final
value is when the last output transaction was committed (for a writer without transactions the
LSO is the high watermark). Taking it from the verifier's record count instead would add the
time the verifier needs to read the last transaction, which for a 1 s transaction is most of
the output and would bias against long transactions.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass

from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # OffsetSpec: not in __all__
    AdminClient,
    OffsetSpec,
)

VERIFIER_NICE = 19
# The LSO is polled this often (one ListOffsets request of ~1 ms on the local broker).
LSO_POLL_INTERVAL_S = 0.01

# How long the verifier keeps reading after the contender exited, to catch late duplicates.
DRAIN_IDLE_S = 1.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the output topic held, judged against the input."""

    expected: int
    seen: int
    distinct: int
    unknown: int
    ok: bool
    problem: str | None


class OutputVerifier(threading.Thread):
    """Reads the output topic (read_committed, from the beginning) until told to stop.

    The thread (and the librdkafka threads its consumer starts) runs at nice 19, so on a busy
    2-core box it reads mostly when the contender leaves CPU idle: reading a writer's output
    while it runs would otherwise tax non-transactional writers (visible at once) more than
    transactional ones (visible at commit). ``reached_at`` (the moment the ``expected``-th
    committed record was read) therefore only says "done"; the window's end comes from the
    LsoWatcher.
    """

    def __init__(
        self, bootstrap_servers: str, topic: str, partitions: int, expected: int, group_id: str
    ) -> None:
        super().__init__(name=f"verify-{topic}", daemon=True)
        self._topic = topic
        self._partitions = partitions
        self.expected = expected
        self._config = {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            # Bounds how late an idle verifier notices the last commit marker.
            "fetch.wait.max.ms": 100,
        }
        self.values: list[bytes] = []
        self.reached_at: float | None = None
        self.reached = threading.Event()
        self.errors: list[str] = []
        # Offsets in the output topic that carried no data record: transaction markers (and
        # aborted records). Zero for a non-transactional writer, so it proves EOS was in use.
        self.offsets_without_records: int | None = None
        # Sum of the partitions' high watermarks after the drain: the LSO once all is committed.
        self.final_end_offsets: int | None = None
        self._stop_requested = threading.Event()

    def run(self) -> None:
        # Linux keeps a nice value per thread; threads created from here inherit it.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), VERIFIER_NICE)
        consumer = Consumer(self._config)
        consumer.assign([TopicPartition(self._topic, p, 0) for p in range(self._partitions)])
        values = self.values
        last_data = time.monotonic()
        try:
            while True:
                batch = consumer.consume(1000, timeout=0.1)
                now = time.monotonic()
                for message in batch:
                    error = message.error()
                    if error is None:
                        values.append(message.value() or b"")
                    elif error.code() != KafkaError._PARTITION_EOF:  # noqa: SLF001
                        self.errors.append(str(error))
                if batch:
                    last_data = now
                    if self.reached_at is None and len(values) >= self.expected:
                        self.reached_at = now
                        self.reached.set()
                elif self._stop_requested.is_set() and now - last_data >= DRAIN_IDLE_S:
                    break
            high = sum(
                consumer.get_watermark_offsets(TopicPartition(self._topic, p), cached=False)[1]
                for p in range(self._partitions)
            )
            self.final_end_offsets = high
            self.offsets_without_records = high - len(values)
        finally:
            consumer.close()

    def stop(self, timeout: float = 30.0) -> None:
        """Read until the topic has been quiet for DRAIN_IDLE_S, then close."""
        self._stop_requested.set()
        self.join(timeout)

    def verdict(self, input_values: Collection[bytes], whole_input: bool) -> Verdict:
        """Judge the output; ``whole_input``: every input record must be there exactly once."""
        seen = len(self.values)
        distinct_values = set(self.values)
        distinct = len(distinct_values)
        unknown = len(distinct_values.difference(input_values))
        problem: str | None = None
        if self.errors:
            problem = f"consumer errors: {self.errors[:3]}"
        elif seen < self.expected:
            problem = f"only {seen} of {self.expected} records were committed"
        elif distinct != seen:
            problem = f"{seen - distinct} duplicate records"
        elif unknown:
            problem = f"{unknown} output records are not input records"
        elif whole_input and distinct != len(input_values):
            problem = f"{distinct} distinct records, expected {len(input_values)}"
        return Verdict(self.expected, seen, distinct, unknown, problem is None, problem)


class LsoWatcher(threading.Thread):
    """Polls the output topic's summed LSO and keeps (monotonic time, sum) at every change."""

    def __init__(self, bootstrap_servers: str, topic: str, partitions: int) -> None:
        super().__init__(name=f"lso-{topic}", daemon=True)
        self._admin = AdminClient({"bootstrap.servers": bootstrap_servers})
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]  # untyped in confluent-kafka
        self._request = {TopicPartition(topic, p): latest for p in range(partitions)}
        self.changes: list[tuple[float, int]] = []
        self.errors: list[str] = []
        self._stop_requested = threading.Event()

    def run(self) -> None:
        last = -1
        while not self._stop_requested.is_set():
            futures = self._admin.list_offsets(
                self._request, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=5
            )
            try:
                total = sum(f.result().offset for f in futures.values())
            except KafkaException as exc:
                self.errors.append(str(exc))
            else:
                if total != last:
                    self.changes.append((time.monotonic(), total))
                    last = total
            self._stop_requested.wait(LSO_POLL_INTERVAL_S)

    def stop(self) -> None:
        self._stop_requested.set()
        self.join(10)

    def first_reaching(self, total: int) -> float | None:
        """When the summed LSO first reached ``total`` (None if it never did)."""
        return next((t for t, value in self.changes if value >= total), None)
