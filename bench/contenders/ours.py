"""Ours: a one-stage pipeline of this project doing the same copy as B2, through StageRunner.

The stage reads ``spec.input_topic`` and writes each record to ``spec.output_topic`` with the
same per-record work as the others (``bench.workloads.value_function``: nothing for "raw"; Avro
decode -> pydantic -> Avro encode for "avro"), inside the stage's transactions (records and
time bounds from the spec). The group is ``<spec.group_id>.copy`` so the harness's clean-up,
which matches on the group name, finds it. The stage's retry and dead-letter topics are created
before the run (they are part of every stage) and stay empty.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bench.spec import FirstRecordMarker, RunSpec
from bench.workloads import value_function
from streams.codecs import raw
from streams.config import KafkaSettings, StageSettings
from streams.pipeline import Pipeline
from streams.record import Output, Record
from streams.stage import StageRunner


def _create_routing_topics(spec: RunSpec, topics: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": spec.bootstrap_servers})
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=spec.partitions, replication_factor=1) for t in topics]
    )
    for future in futures.values():
        future.result(timeout=30)


# The harness's --consumer-setting / --producer-setting keys that the stage models as settings;
# any other key goes to the escape hatch (KafkaSettings.kafka_extra, every client).
_STAGE_FIELDS = {
    "queued.max.messages.kbytes": "consumer_queue_max_kbytes",
    "queued.min.messages": "consumer_queue_min_messages",
    "fetch.max.bytes": "fetch_max_bytes",
    "max.partition.fetch.bytes": "partition_fetch_max_bytes",
    "queue.buffering.max.kbytes": "producer_queue_max_kbytes",
}


def run(spec: RunSpec) -> None:
    transform = value_function(spec.workload, spec.schema_registry_url, spec.schema_id)
    marker = FirstRecordMarker(spec.marker_path)
    pipeline = Pipeline(spec.group_id, partitions=spec.partitions)

    def copy(record: Record[bytes]) -> Output:
        marker.mark()
        value = record.value if transform is None else transform(record.value)
        return Output(value)

    stage = pipeline.add_stage(
        "copy", copy, inputs=[spec.input_topic], outputs={spec.output_topic: raw()}
    )
    _create_routing_topics(spec, [*stage.retry_topics, stage.dlq_topic])
    extra: dict[str, Any] = {}
    modelled: dict[str, Any] = {}
    for key, value in {**spec.consumer_settings, **spec.producer_settings}.items():
        if key in _STAGE_FIELDS:
            modelled[_STAGE_FIELDS[key]] = int(value)
        else:
            extra[key] = value
    settings = StageSettings(
        batch_max_records=spec.txn_max_records or 1_000_000,
        batch_max_ms=round(spec.txn_interval_s * 1000),
        consume_max_records=spec.consume_batch,
        stats_interval_s=3600,
        **modelled,
    )
    if spec.retry_backoff_ms is not None:
        extra["retry.backoff.ms"] = spec.retry_backoff_ms
    if spec.fetch_queue_backoff_ms is not None:
        extra["fetch.queue.backoff.ms"] = spec.fetch_queue_backoff_ms
    runner = StageRunner(
        stage,
        kafka=KafkaSettings(bootstrap_servers=spec.bootstrap_servers, kafka_extra=extra),
        settings=settings,
    )
    runner.run(max_records=spec.records)
    spec.add_report(**runner.stats.snapshot(group=stage.group_id, slot=0))
