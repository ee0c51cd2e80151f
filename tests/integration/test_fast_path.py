"""The fast path (streams/stage/fastpath.py) writes exactly what the general path writes.

One input of every kind a stage meets: plain records, records with headers, a key that is not
UTF-8, a null value, a handler that filters, fans out, adds headers, returns a plain value or
an Output, raises DeadLetter or crashes, and an output over the output topic's size limit. The
same stage runs over it twice, once with ``StageSettings(fast_path=False)`` (the control: every
record takes the general path) and once with the fast path; outputs and dead letters must be
the same, record for record, in order per partition.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from confluent_kafka import Producer

from streams import headers as h
from streams.codecs import raw
from streams.config import KafkaSettings, StageSettings
from streams.exceptions import DeadLetter
from streams.kafka.messages import message_headers
from streams.pipeline import Pipeline
from streams.record import Output, Record
from streams.stage import StageRunner
from streams.stage.batch import TransactionBatch
from tests.integration.conftest import Cluster, PipelineTopics, TopicFactory
from tests.integration.eos import read_topic

pytestmark = pytest.mark.integration

_RECORDS = 700
_LIMIT = 4000  # the output topic's max.message.bytes


def _handle(record: Record[bytes]) -> object:  # noqa: PLR0911 - one branch per kind of result
    n = int(record.value.split(b":")[0])
    kind = n % 10
    if kind == 0:
        return None  # filtered
    if kind == 1:
        return Output(record.value, headers=[("seen", b"1")])
    if kind == 2:
        raise DeadLetter("planned")
    if kind == 3:
        return [Output(record.value), Output(record.value + b"+", key="other")]
    if kind == 4:
        return record.value  # a plain value
    if kind == 5:
        return record.value * 100  # over the output topic's limit: output-rejected
    if kind == 6:
        return Output(record.value, key=None)
    if kind == 7 and n % 70 == 7:
        raise ZeroDivisionError("a bug in the handler, for some records")
    return Output(record.value)


def _produce(cluster: Cluster, topic: str) -> None:
    producer = Producer(cluster.client_config())
    for n in range(_RECORDS):
        value = f"{n}:".encode() + b"x" * 60
        key: bytes | None = f"k{n % 13}".encode()
        extra: list[tuple[str, str | bytes | None]] | None = None
        if n % 50 == 11:
            key = b"\xff\xfe not utf-8"  # the key does not decode: DLQ, deserialization
        if n % 17 == 0:
            extra = [("trace", str(n).encode())]
        if n % 97 == 8:
            key = None
        producer.produce(topic, value, key=key, headers=extra, partition=n % 2)
    producer.produce(topic, None, key=b"tombstone", partition=0)  # null value: DLQ
    producer.flush(30)


def _written(
    cluster: Cluster, topic: str, names: dict[str, str]
) -> list[tuple[int, Any, Any, tuple[Any, ...]]]:
    """(partition, key, value, headers) in their defined order; the run's own names replaced by
    ``names``'s placeholders, and the headers that hold a time or a stack left out."""
    volatile = {h.FIRST_FAILURE_MS, h.ERROR_STACK, h.ORIGINAL_TIMESTAMP}
    found = []
    for message in read_topic(cluster.client_config(), topic, 2, idle_polls=6):
        kept = []
        for name, data in message_headers(message):
            if name in volatile:
                continue
            value = data
            for real, placeholder in names.items():
                value = (
                    None if value is None else value.replace(real.encode(), placeholder.encode())
                )
            kept.append((name, value))
        key = message.key()
        # a record without a key goes to a random partition: compared apart, as a set
        partition = -1 if key is None else message.partition()
        found.append((partition, key, message.value(), tuple(kept)))
    # the order that is defined: within one output partition, of the records of one input
    # partition (n % 2; consume() interleaves the input partitions differently in each run)
    keyed = sorted((f for f in found if f[0] >= 0), key=lambda f: (f[0], _input_partition(f[2])))
    return keyed + sorted(f for f in found if f[0] < 0)


def _input_partition(value: bytes | None) -> int:
    return 0 if value is None else int(value.split(b":")[0]) % 2


def _run(
    cluster: Cluster,
    topic_factory: TopicFactory,
    pipeline_topics: PipelineTopics,
    *,
    fast: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[list[Any], list[Any], int]:
    source = topic_factory("in", partitions=2)
    sink = topic_factory("out", partitions=2, config={"max.message.bytes": str(_LIMIT)})
    pipeline = Pipeline(f"fast{uuid.uuid4().hex[:6]}", partitions=2)
    stage = pipeline.add_stage("mix", _handle, inputs=[source], outputs={sink: raw()})
    pipeline_topics(pipeline)
    _produce(cluster, source)
    general = 0
    original = TransactionBatch.handle_one

    def counted(self: TransactionBatch, message: Any) -> None:
        nonlocal general
        general += 1
        original(self, message)

    monkeypatch.setattr(TransactionBatch, "handle_one", counted)
    runner = StageRunner(
        stage,
        kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers),
        settings=StageSettings(fast_path=fast, stats_interval_s=60),
    )
    runner.run(idle_timeout_s=6)
    monkeypatch.undo()
    names = {source: "<in>", sink: "<out>", pipeline.name: "<pipeline>"}
    return _written(cluster, sink, names), _written(cluster, stage.dlq_topic, names), general


def test_the_fast_path_writes_what_the_general_path_writes(
    cluster: Cluster,
    topic_factory: TopicFactory,
    pipeline_topics: PipelineTopics,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outputs_general, dead_general, general_calls = _run(
        cluster, topic_factory, pipeline_topics, fast=False, monkeypatch=monkeypatch
    )
    outputs_fast, dead_fast, fast_general_calls = _run(
        cluster, topic_factory, pipeline_topics, fast=True, monkeypatch=monkeypatch
    )
    # the control: without the fast path every record took the general path; with it, fewer
    assert general_calls == _RECORDS + 1
    assert 0 < fast_general_calls < _RECORDS / 2, "most records took the fast path"
    assert len(outputs_general) > _RECORDS / 2
    reasons = {dict(hs).get(h.ERROR_REASON) for _, _, _, hs in dead_general}
    assert reasons == {b"dead-letter", b"handler", b"output-rejected", b"deserialization"}
    assert outputs_fast == outputs_general
    assert dead_fast == dead_general
