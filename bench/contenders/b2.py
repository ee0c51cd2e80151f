"""B2: the B1 loop with Kafka transactions (the exactly-once ceiling on confluent-kafka).

read_committed consumer, transactional producer, one transaction per ``txn_max_records``
records (0 = no record bound) or ``txn_interval_s`` seconds, whichever comes first; the
offsets go in with ``send_offsets_to_transaction(consumer.position(assignment), metadata)``.
The commit latency (send_offsets + commit_transaction, which waits for delivery) of every
transaction is reported, because it sets the exactly-once penalty.

The loop assumes one consumer in its group (no rebalance mid-transaction), as in the benchmark.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from confluent_kafka import Consumer, Message, Producer, TopicPartition, libversion

from bench.contenders.b1 import common_config, consumer_config, next_offsets, produce_batch
from bench.spec import FirstRecordMarker, RunSpec
from bench.workloads import value_function

IDLE_CONSUME_TIMEOUT_S = 1.0


class TransactionalCopy:
    """consume -> produce inside a transaction -> commit by record count or by time."""

    def __init__(self, spec: RunSpec, transform: Callable[[bytes], bytes] | None) -> None:
        self.spec = spec
        self.transform = transform
        self.consumer = Consumer({**consumer_config(spec), "isolation.level": "read_committed"})
        self.producer = Producer(
            {
                **common_config(spec),
                "linger.ms": spec.linger_ms,
                "transactional.id": spec.transactional_id,
                **spec.producer_settings,
            }
        )
        self.commit_latencies: list[float] = []
        self.in_txn = False
        self.txn_started = 0.0
        self.txn_records = 0
        # Set only when the last batch is cut at spec.records: then position() would overshoot.
        self.cut_offsets: list[TopicPartition] | None = None

    def commit(self) -> None:
        started = time.monotonic()
        consumer = self.consumer
        offsets = self.cut_offsets or consumer.position(consumer.assignment())
        self.producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata())
        self.producer.commit_transaction()
        self.commit_latencies.append(time.monotonic() - started)
        self.in_txn = False

    def copy(self, messages: list[Message]) -> None:
        if not self.in_txn:
            self.producer.begin_transaction()
            self.in_txn = True
            self.txn_started = time.monotonic()
            self.txn_records = 0
        produce_batch(self.producer, self.spec.output_topic, messages, self.transform)
        self.txn_records += len(messages)

    def run(self) -> None:
        spec = self.spec
        self.producer.init_transactions()
        marker = FirstRecordMarker(spec.marker_path)
        self.consumer.subscribe([spec.input_topic])
        max_records = spec.txn_max_records
        interval = spec.txn_interval_s
        remaining = spec.records
        while remaining > 0:
            timeout = (
                max(0.0, self.txn_started + interval - time.monotonic())
                if self.in_txn
                else IDLE_CONSUME_TIMEOUT_S
            )
            messages = self.consumer.consume(spec.consume_batch, timeout=timeout)
            if messages:
                marker.mark()
                if len(messages) > remaining:
                    messages = messages[:remaining]
                    self.cut_offsets = next_offsets(messages)
                self.copy(messages)
                remaining -= len(messages)
            if self.in_txn and (
                remaining == 0
                or (max_records and self.txn_records >= max_records)
                or time.monotonic() - self.txn_started >= interval
            ):
                self.commit()

    def report(self) -> dict[str, object]:
        ms = sorted(1000 * s for s in self.commit_latencies)
        return {
            "librdkafka": libversion()[0],
            "transactions": len(ms),
            "commit_ms_p50": statistics.median(ms) if ms else None,
            "commit_ms_p99": ms[int(0.99 * (len(ms) - 1))] if ms else None,
            "commit_ms_max": ms[-1] if ms else None,
            "commit_s_total": sum(self.commit_latencies),
        }


def run(spec: RunSpec) -> None:
    transform = value_function(spec.workload, spec.schema_registry_url, spec.schema_id)
    stage = TransactionalCopy(spec, transform)
    try:
        stage.run()
    finally:
        stage.consumer.close()
    spec.add_report(**stage.report())
