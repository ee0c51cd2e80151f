"""Write records to a topic from lines of text: what `streams produce` runs.

Each line is one record. Its value is the line as it is, or, with a codec (a pipeline stage's),
the line read as JSON, validated by the codec's model and encoded as the stage expects it (JSON,
or Avro in the Confluent wire format through the schema registry). A key is the same for every
record, or taken from each line before a separator (``key<TAB>value``, as ``kcat -K``).

The producer is idempotent (``acks=all``): a record is written once even when the client
retries. A line that does not encode stops the run: the records before it are flushed and
counted, and the error names the line.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streams.codecs import Codec, registry_for
from streams.config import KafkaSettings
from streams.exceptions import KafkaClientError, SerializationError, UnknownTopicError
from streams.serde import Serde

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

__all__ = ["LineEncoder", "ProduceError", "ProduceReport", "produce_lines"]

# How long a record may wait for the broker before its delivery fails: far below librdkafka's
# 300 s default, so that `produce` with the broker down reports it within half a minute.
_DELIVERY_TIMEOUT_MS = 30_000
# The first request: a broker that has not answered in 10 s is not there.
_REACH_TIMEOUT_S = 10


class ProduceError(KafkaClientError):
    """A record could not be encoded or written; ``written`` records before it were."""

    def __init__(self, message: str, *, written: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.written = written


@dataclass
class ProduceReport:
    topic: str
    records: int = 0
    # records written to each partition
    partitions: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "records": self.records, "partitions": self.partitions}


class LineEncoder:
    """Turns one line into (key, value) bytes: as it is, or through a stage's codecs."""

    def __init__(
        self,
        *,
        value_codec: Codec | None = None,
        key_codec: Codec | None = None,
        key: str | None = None,
        key_separator: str | None = None,
        kafka: KafkaSettings | None = None,
    ) -> None:
        self.key = key
        self.key_separator = key_separator
        codecs = [codec for codec in (value_codec, key_codec) if codec is not None]
        registry = registry_for(codecs, (kafka or KafkaSettings()).schema_registry_url)
        self._value = _Encoding(value_codec, registry)
        self._key = _Encoding(key_codec, registry)

    def encode(self, line: bytes, *, topic: str) -> tuple[bytes | None, bytes]:
        key = None if self.key is None else self.key.encode()
        value = line
        if self.key_separator is not None:
            key, separator, value = line.partition(self.key_separator.encode())
            if not separator:
                raise SerializationError(f"no key separator {self.key_separator!r} in the line")
        key_bytes = None if key is None else self._key.encode(key, topic=topic)
        return key_bytes, self._value.encode(value, topic=topic)


class _Encoding:
    """A line's bytes as they are, or for a JSON/Avro codec, JSON validated by its model first."""

    def __init__(self, codec: Codec | None, registry: SchemaRegistryClient | None) -> None:
        self._model = None if codec is None else codec.model
        self._serde: Serde[Any] | None = (
            codec.build(registry) if codec is not None and codec.model is not None else None
        )

    def encode(self, data: bytes, *, topic: str) -> bytes:
        if self._serde is None or self._model is None:
            return data
        from streams.serde.json import JsonSerde  # noqa: PLC0415 - loaded with the codec

        model = JsonSerde(self._model).deserialize(data, topic=topic)
        return self._serde.serialize(model, topic=topic)


def produce_lines(
    topic: str,
    lines: Iterable[bytes],
    *,
    encoder: LineEncoder,
    headers: Sequence[tuple[str, str | bytes | None]] = (),
    partition: int | None = None,
    kafka: KafkaSettings | None = None,
) -> ProduceReport:
    """Write one record per line (blank lines are skipped); returns what was written."""
    settings = kafka or KafkaSettings()
    producer = Producer(
        {
            **settings.client_config(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": _DELIVERY_TIMEOUT_MS,
        }
    )
    _require_topic(producer, topic, partition, settings)
    report = _Deliveries(topic)
    for number, line in enumerate(lines, start=1):
        data = line.rstrip(b"\r\n")
        if not data.strip():
            continue
        try:
            key, value = encoder.encode(data, topic=topic)
        except SerializationError as error:
            _flush(producer, report, settings)
            raise ProduceError(
                f"line {number}: {error.message}",
                written=report.records,
                hint=f"{report.records} record(s) before it were written; fix the line "
                "(or leave out --pipeline to write lines as they are)",
            ) from error
        _produce(
            producer,
            topic,
            value=value,
            key=key,
            headers=list(headers),
            on_delivery=report.delivered,
            partition=partition,
        )
    _flush(producer, report, settings)
    return ProduceReport(topic, report.records, dict(report.partitions))


class _Deliveries(ProduceReport):
    """The report, filled in by the producer's delivery callbacks."""

    def __init__(self, topic: str) -> None:
        super().__init__(topic)
        self.failures: list[KafkaError] = []
        self._lock = threading.Lock()

    def delivered(self, error: KafkaError | None, message: Message) -> None:
        with self._lock:
            if error is not None:
                self.failures.append(error)
                return
            self.records += 1
            written = message.partition() or 0
            self.partitions[written] = self.partitions.get(written, 0) + 1


def _produce(
    producer: Producer,
    topic: str,
    *,
    value: bytes,
    key: bytes | None,
    headers: list[tuple[str, str | bytes | None]],
    on_delivery: Any,
    partition: int | None,
) -> None:
    while True:
        try:
            producer.produce(
                topic,
                value,
                key,
                partition=-1 if partition is None else partition,  # -1: the partitioner's choice
                headers=headers,
                on_delivery=on_delivery,
            )
            producer.poll(0)
        except BufferError:
            producer.poll(0.5)  # the local queue is full: wait for deliveries, then go on
            continue
        return


def _flush(producer: Producer, report: _Deliveries, kafka: KafkaSettings) -> None:
    left = producer.flush(_DELIVERY_TIMEOUT_MS / 1000 + 5)
    if report.failures or left:
        failures = report.failures
        first = failures[0].str() if failures else f"{left} record(s) not delivered in time"
        raise ProduceError(
            f"{len(failures) or left} record(s) not written to {report.topic}: {first}",
            written=report.records,
            hint=kafka.reach_hint,
        )


def _require_topic(
    producer: Producer, topic: str, partition: int | None, kafka: KafkaSettings
) -> None:
    """The topic exists (and has ``partition``); a clear error at once otherwise."""
    try:
        metadata = producer.list_topics(topic, timeout=_REACH_TIMEOUT_S).topics.get(topic)
    except KafkaException as error:
        raise KafkaClientError(
            f"cannot reach Kafka at {kafka.bootstrap_servers} (no answer in {_REACH_TIMEOUT_S} s)",
            hint=kafka.reach_hint,
        ) from error
    if metadata is None or metadata.error is not None:
        raise UnknownTopicError(
            f"no topic {topic} at {kafka.bootstrap_servers}",
            hint="create it (`streams topics create MODULE:PIPELINE` for a pipeline's topics); "
            "`streams topics list` shows the topics there are",
        )
    if partition is not None and partition not in metadata.partitions:
        raise UnknownTopicError(
            f"topic {topic} has no partition {partition} (it has {len(metadata.partitions)})",
            hint=f"give --partition 0..{len(metadata.partitions) - 1}, or leave it out",
        )
