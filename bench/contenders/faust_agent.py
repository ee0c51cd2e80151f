"""faust-streaming: one agent, ``processing_guarantee="exactly_once"``, copying input to output.

Runs under ``.bench-venv`` (faust-streaming 0.15 with aiokafka 0.14; aiokafka >= 0.13 is needed
for Kafka 4.x). Keys and values use the "raw" codec; the "avro" workload applies the same
transcoder as every other contender inside the agent. ``broker_commit_every`` and
``broker_commit_interval`` follow the run's transaction bounds. Faust opens one transactional
producer per input partition (its KIP-98 design), and the harness stops it with SIGTERM.

Two contenders use this module:

* "faust" is faust as shipped. Its sends to the output topic do NOT go into a transaction:
  ``TransactionManager.send`` picks the transactional producer from the *output* partition
  through the consumer's metadata, which only knows subscribed topics, so it falls back to the
  plain producer (faust-streaming/faust#177, open since 2021). The harness shows this as
  0 transaction markers in the output topic.
* "faust-eos" patches ``TransactionManager.send`` to use the transactional producer of the
  *input* partition being processed (``faust.current_event()``), whose transaction faust
  commits together with that partition's offsets. That is what exactly-once needs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import faust
from faust.streams import current_event
from faust.transport.consumer import TransactionManager

from bench.spec import FirstRecordMarker, RunSpec
from bench.workloads import value_function

# faust treats broker_commit_every=0 as "commit after every record"; b2's 0 means "no bound".
_NO_RECORD_BOUND = 2**31 - 1
PATCHED_CONTENDER = "faust-eos"


def route_sends_to_source_transaction() -> None:
    """Make faust's exactly-once sends join the transaction of the input partition."""
    shipped_send = TransactionManager.send

    # Same parameters as faust's TransactionManager.send, which it replaces.
    async def send(  # noqa: PLR0917
        self: TransactionManager,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
        *,
        transactional_id: str | None = None,
    ) -> Any:
        event = current_event()
        if event is None:  # not inside an agent: keep faust's behaviour
            return await shipped_send(
                self, topic, key, value, partition, timestamp, headers,
                transactional_id=transactional_id,
            )  # fmt: skip
        source = event.message.tp
        group = self.app.assignor.group_for_topic(source.topic)
        return await self.producer.send(
            topic,
            key,
            value,
            partition,
            timestamp,
            headers,
            transactional_id=f"{self.app.conf.id}-{group}-{source.partition}",
        )

    TransactionManager.send = send  # type: ignore[method-assign]


def run(spec: RunSpec) -> None:
    if spec.contender == PATCHED_CONTENDER:
        route_sends_to_source_transaction()
    transform = value_function(spec.workload, spec.schema_registry_url, spec.schema_id)
    marker = FirstRecordMarker(spec.marker_path)
    app = faust.App(
        spec.group_id,
        broker=f"kafka://{spec.bootstrap_servers}",
        processing_guarantee="exactly_once",
        broker_commit_every=spec.txn_max_records or _NO_RECORD_BOUND,
        broker_commit_interval=spec.txn_interval_s,
        producer_linger=spec.linger_ms / 1000,
        consumer_auto_offset_reset="earliest",
        topic_partitions=spec.partitions,
        web_enabled=False,
        store="memory://",
        datadir=str(Path(spec.work_dir) / f"faust-{spec.group_id}"),
    )
    codec: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "partitions": spec.partitions,
    }
    source = app.topic(spec.input_topic, **codec)
    sink = app.topic(spec.output_topic, **codec)

    async def copy(stream: Any) -> None:
        async for event in stream.events():
            if marker.pending:
                marker.mark()
            value = event.value if transform is None else transform(event.value)
            await sink.send(key=event.key, value=value)

    app.agent(source, name="copy")(copy)
    worker = faust.Worker(app, loglevel=logging.WARNING, quiet=True)
    worker.execute_from_commandline()
