"""Quix Streams: ``Application(processing_guarantee="exactly-once")`` copying input to output.

Runs under ``.bench-venv`` (Quix pins confluent-kafka < 2.13 and pydantic < 2.14). Keys and
values use Quix's bytes (de)serializers; the "avro" workload adds one ``sdf.apply`` with the
same transcoder as every other contender. Commits follow the run's bounds: ``commit_every`` =
records per transaction, ``commit_interval`` = seconds. Quix has no "stop after N records" for
production use, so the harness stops it with SIGTERM, which Quix handles gracefully.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from confluent_kafka import libversion
from quixstreams import Application
from quixstreams.models.serializers.simple_types import BytesDeserializer

from bench.spec import FirstRecordMarker, RunSpec
from bench.workloads import value_function


class _MarkingBytesDeserializer(BytesDeserializer):  # type: ignore[misc]
    """Quix's bytes pass-through plus one attribute test, to time the first consumed record."""

    def __init__(self, marker: FirstRecordMarker) -> None:
        super().__init__()
        self._marker = marker

    # Quix passes ``ctx=`` by keyword, so the unused parameter keeps its name.
    def __call__(self, value: bytes, ctx: Any) -> bytes:  # noqa: ARG002
        if self._marker.pending:
            self._marker.mark()
        return value


def run(spec: RunSpec) -> None:
    transform = value_function(spec.workload, spec.schema_registry_url, spec.schema_id)
    spec.add_report(librdkafka=libversion()[0])
    client_extra: dict[str, Any] = {}
    if spec.retry_backoff_ms is not None:
        client_extra["retry.backoff.ms"] = spec.retry_backoff_ms
    consumer_extra = dict(client_extra)
    if spec.fetch_queue_backoff_ms is not None:
        consumer_extra["fetch.queue.backoff.ms"] = spec.fetch_queue_backoff_ms
    consumer_extra.update(spec.consumer_settings)
    app = Application(
        broker_address=spec.bootstrap_servers,
        consumer_group=spec.group_id,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_interval=spec.txn_interval_s,
        commit_every=spec.txn_max_records,  # 0 disables the record bound, as in b2
        producer_extra_config={
            **client_extra,
            "linger.ms": spec.linger_ms,
            "transactional.id": spec.transactional_id,
            **spec.producer_settings,
        },
        consumer_extra_config=consumer_extra,
        state_dir=Path(spec.work_dir) / f"quix-state-{spec.group_id}",
        use_changelog_topics=False,
        auto_create_topics=False,
        loglevel="WARNING",
    )
    source = app.topic(
        spec.input_topic,
        key_deserializer="bytes",
        value_deserializer=_MarkingBytesDeserializer(FirstRecordMarker(spec.marker_path)),
    )
    sink = app.topic(spec.output_topic, key_serializer="bytes", value_serializer="bytes")
    sdf = app.dataframe(source)
    if transform is not None:
        sdf = sdf.apply(transform)
    sdf.to_topic(sink)
    app.run()
