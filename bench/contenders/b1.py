"""B1: the plain confluent-kafka batch loop, no transactions (the practical ceiling).

``consume(num_messages=500)`` -> ``produce`` per record -> ``poll(0)`` ->
``commit(asynchronous=True)``. The offsets of a batch are committed without waiting for its
delivery reports, so a crash could lose the records still in the producer queue: this is the
ceiling, not a careful at-least-once stage. On the way out the producer is flushed and the last
offsets committed synchronously.

"b1-1s" runs the same loop but commits only every ``txn_interval_s`` seconds (1 s), the same
cadence as "b2-1s": B2(1 s)/B1(1 s) isolates the cost of the transactions themselves, while
B2(1 s)/B1 also counts the ~2 offset commits per 1,000 records that B1 sends.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Consumer, Message, Producer, TopicPartition, libversion

from bench.spec import FirstRecordMarker, RunSpec
from bench.workloads import value_function

CONSUME_TIMEOUT_S = 1.0
# This contender commits after every batch; "b1-1s" (same module) commits by the run's bounds.
PER_BATCH_CONTENDER = "b1"


def common_config(spec: RunSpec) -> dict[str, object]:
    config: dict[str, object] = {"bootstrap.servers": spec.bootstrap_servers}
    if spec.retry_backoff_ms is not None:
        config["retry.backoff.ms"] = spec.retry_backoff_ms
    return config


def consumer_config(spec: RunSpec) -> dict[str, object]:
    tuning: dict[str, object] = {}
    if spec.fetch_queue_backoff_ms is not None:
        tuning["fetch.queue.backoff.ms"] = spec.fetch_queue_backoff_ms
    return {
        **common_config(spec),
        **tuning,
        "group.id": spec.group_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        **spec.consumer_settings,
    }


def producer_config(spec: RunSpec) -> dict[str, object]:
    return {
        **common_config(spec),
        "linger.ms": spec.linger_ms,
        "acks": "all",
        **spec.producer_settings,
    }


def next_offsets(messages: list[Message]) -> list[TopicPartition]:
    """Offsets to commit after ``messages`` (only for a batch cut short at the record limit)."""
    last: dict[tuple[str, int], int] = {}
    for message in messages:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is not None and partition is not None and offset is not None:
            last[(topic, partition)] = offset + 1
    return [TopicPartition(topic, partition, offset) for (topic, partition), offset in last.items()]


def produce_batch(
    producer: Producer,
    topic: str,
    messages: list[Message],
    transform: Callable[[bytes], bytes] | None,
) -> None:
    """The per-record hot loop shared by b1 and b2: produce each record, then serve callbacks."""
    produce = producer.produce
    for message in messages:
        if message.error() is not None:
            raise RuntimeError(f"consume error: {message.error()}")
        value = message.value()
        if transform is not None:
            value = transform(value)  # type: ignore[arg-type]  # no null values here
        try:
            produce(topic, value, message.key())
        except BufferError:  # the local queue is full: let librdkafka drain it, then retry
            producer.poll(0.1)
            produce(topic, value, message.key())
    producer.poll(0)


class _CommitGate:
    """When b1 commits: after every batch ("b1"), or by the run's bounds ("b1-1s")."""

    def __init__(self, spec: RunSpec) -> None:
        self.every_batch = spec.contender == PER_BATCH_CONTENDER
        self.max_records = spec.txn_max_records
        self.interval = spec.txn_interval_s
        self.last = time.monotonic()
        self.pending = 0
        self.commits = 0

    def due(self, records: int) -> bool:
        self.pending += records
        now = time.monotonic()
        if (
            self.every_batch
            or (self.max_records and self.pending >= self.max_records)
            or now - self.last >= self.interval
        ):
            self.last = now
            self.pending = 0
            self.commits += 1
            return True
        return False


def run(spec: RunSpec) -> None:
    transform = value_function(spec.workload, spec.schema_registry_url, spec.schema_id)
    consumer = Consumer(consumer_config(spec))
    producer = Producer(producer_config(spec))
    marker = FirstRecordMarker(spec.marker_path)
    gate = _CommitGate(spec)
    consumer.subscribe([spec.input_topic])
    remaining = spec.records
    cut_short = False
    try:
        while remaining > 0:
            messages = consumer.consume(spec.consume_batch, timeout=CONSUME_TIMEOUT_S)
            if not messages:
                continue
            marker.mark()
            cut_short = len(messages) > remaining
            if cut_short:
                messages = messages[:remaining]
            produce_batch(producer, spec.output_topic, messages, transform)
            if cut_short:
                consumer.commit(offsets=next_offsets(messages), asynchronous=True)
            elif gate.due(len(messages)):
                consumer.commit(asynchronous=True)
            remaining -= len(messages)
        if producer.flush(60) != 0:
            raise RuntimeError("records still undelivered after 60 s")
        if not cut_short:  # explicit offsets: a bare commit() fails if nothing is left to commit
            consumer.commit(offsets=consumer.position(consumer.assignment()), asynchronous=False)
    finally:
        consumer.close()
    spec.add_report(librdkafka=libversion()[0], async_commits=gate.commits)
