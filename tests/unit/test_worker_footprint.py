"""What a stage worker imports and how much librdkafka may queue for it (bench/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from confluent_kafka import Consumer

from streams.config import KafkaSettings, StageSettings
from streams.kafka.clients import transactional_producer_config, worker_consumer_config
from streams.kafka.limits import TopicLimits

ROOT = Path(__file__).resolve().parents[2]

# Loaded only by the components that use them; a plain stage worker must not pay for them.
_NOT_FOR_A_STAGE = (
    "prometheus_client",
    "sqlite3",
    "fastavro",
    "confluent_kafka.schema_registry",
    "faust",
    "click",
    "streams.aggregate",
    "streams.sinks",
    "streams.agents",
    "streams.cli",
)


def test_a_stage_worker_does_not_import_what_only_other_components_need() -> None:
    probe = (
        "import json, sys, streams.runtime.worker; "
        f"print(json.dumps([m for m in {list(_NOT_FOR_A_STAGE)!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == []


def test_the_worker_clients_carry_the_queue_bounds_of_the_stage_settings() -> None:
    kafka = KafkaSettings(bootstrap_servers="broker:9092")
    settings = StageSettings(
        consumer_queue_min_messages=123,
        consumer_queue_max_kbytes=456,
        fetch_max_bytes=2_000_000,
        partition_fetch_max_bytes=100_000,
        producer_queue_max_kbytes=789,
    )
    consumer = worker_consumer_config(kafka, settings, group_id="g", client_id="c")
    assert consumer["queued.min.messages"] == 123
    assert consumer["queued.max.messages.kbytes"] == 456
    assert consumer["fetch.max.bytes"] == 2_000_000
    assert consumer["max.partition.fetch.bytes"] == 100_000
    producer = transactional_producer_config(
        kafka, settings, client_id="c", transactional_id="t", limits=TopicLimits(per_topic={})
    )
    assert producer["queue.buffering.max.kbytes"] == 789


def test_the_escape_hatch_still_wins_over_the_queue_bounds() -> None:
    kafka = KafkaSettings(bootstrap_servers="broker:9092", kafka_extra={"queued.min.messages": 7})
    consumer = worker_consumer_config(kafka, StageSettings(), group_id="g", client_id="c")
    assert consumer["queued.min.messages"] == 7


def test_librdkafka_accepts_the_default_queue_bounds() -> None:
    # it refuses, for one, a consumer whose fetch.max.bytes is below message.max.bytes
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    config = worker_consumer_config(kafka, StageSettings(), group_id="g", client_id="c")
    Consumer(config).close()
