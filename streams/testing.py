"""Run a stage's handler on in-memory records, without a broker, for your own unit tests.

The same decoding, handler call and output routing as the real worker (and the same serdes,
so a JSON or Avro output that would fail to encode fails here too)::

    from streams.testing import StageHarness

    harness = StageHarness(pipeline.get("validate"))
    out = harness.send(b'{"order_id": "o-1", ...}', key="o-1")
    assert out["orders.placed"][0].value.order_id == "o-1"

    outcome = harness.process(b"not json", key="o-2")      # where would a failure go?
    assert outcome.routed is not None and outcome.routed.topic == "orders.validate.dlq"
    assert outcome.routed.reason == "deserialization"

``send`` raises what the handler (or decoding) raises; ``process`` never does: it reports the
outputs, or the retry tier or dead-letter topic the stage would write the record to, with its
attempt number and headers (``attempt=2`` plays a record that already failed once).

Avro stages need a schema registry client; ``StageHarness`` uses confluent-kafka's in-process
mock registry (``mock://``) unless you pass one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streams import headers as _headers
from streams.config import StageSettings
from streams.exceptions import OutputRejectedError, OutputTopicError, SerializationError
from streams.kafka.limits import KAFKA_DEFAULT_MAX_BYTES
from streams.record import Record
from streams.spec import StageSpec
from streams.stage.routing import Routed, route
from streams.stage.serdes import StageSerdes, normalize_outputs

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

__all__ = ["Outcome", "Produced", "Routed", "SerializationError", "StageHarness"]


@dataclass(frozen=True)
class Produced:
    """One output as the stage would write it: raw bytes, and decoded back for assertions."""

    topic: str
    key: str | None
    value: Any
    key_bytes: bytes | None
    value_bytes: bytes | None
    headers: list[tuple[str, bytes | None]]


@dataclass(frozen=True)
class Outcome:
    """What the stage would do with one record: write ``outputs``, or route it (``routed``)."""

    outputs: dict[str, list[Produced]] = field(default_factory=dict)
    routed: Routed | None = None
    error: BaseException | None = None  # why it was routed


class StageHarness:
    """Feeds raw or typed input records to one stage's handler, collects its outputs by topic."""

    def __init__(self, spec: StageSpec, *, registry: SchemaRegistryClient | None = None) -> None:
        if registry is None:
            # the registry client is loaded only here: importing streams must stay light for
            # workers of raw and JSON stages, which never need it
            from confluent_kafka.schema_registry import SchemaRegistryClient  # noqa: PLC0415

            registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
        self.spec = spec
        self.codecs = StageSerdes(spec, registry)
        self._offsets: dict[tuple[str, int], int] = defaultdict(int)
        # as the worker's STREAMS_STAGE_MAX_MESSAGE_BYTES (else a topic's default limit): a
        # larger output is dead-lettered
        self.max_message_bytes = StageSettings().max_message_bytes or KAFKA_DEFAULT_MAX_BYTES

    def encode_input(self, value: Any) -> bytes:
        """Encode a typed value with the stage's input codec (to build test input)."""
        return self.codecs.input.serialize(value, topic=self.spec.inputs[0])

    def send(
        self,
        value: bytes | Any,
        *,
        key: str | None = None,
        topic: str | None = None,
        partition: int = 0,
        headers: list[tuple[str, bytes | None]] | None = None,
        timestamp_ms: int = 0,
    ) -> dict[str, list[Produced]]:
        """Process one record (raw bytes are decoded; anything else is encoded first)."""
        message = self._message(
            value,
            key=key,
            topic=topic,
            partition=partition,
            headers=headers or [],
            timestamp_ms=timestamp_ms,
        )
        return self._outputs(self.codecs.decode(message))

    def process(
        self,
        value: bytes | Any,
        *,
        key: str | None = None,
        topic: str | None = None,
        partition: int = 0,
        headers: list[tuple[str, bytes | None]] | None = None,
        timestamp_ms: int = 0,
        attempt: int = 1,
    ) -> Outcome:
        """Process one record as the stage would, failures included: never raises for it.

        ``attempt`` > 1 plays a record read back from a retry topic after ``attempt - 1``
        failures. A handler writing to a topic the stage does not declare still raises
        ``OutputTopicError``: the worker stops on it (exit code 5).
        """
        given = list(headers or [])
        if attempt > 1:
            given.append((_headers.ATTEMPT, str(attempt - 1).encode()))
        message = self._message(
            value,
            key=key,
            topic=topic,
            partition=partition,
            headers=given,
            timestamp_ms=timestamp_ms,
        )
        try:
            record = self.codecs.decode(message)
            return Outcome(outputs=self._outputs(record, limit=self.max_message_bytes))
        except OutputTopicError:
            raise
        except Exception as error:  # noqa: BLE001 - what the stage routes, the harness reports
            routed = route(
                message,
                error,
                group_id=self.spec.group_id,
                policy=self.spec.retry,
                now_ms=time.time_ns() // 1_000_000,
            )
            return Outcome(routed=routed, error=error)

    def _message(
        self,
        value: bytes | Any,
        *,
        key: str | None,
        topic: str | None,
        partition: int,
        headers: list[tuple[str, bytes | None]],
        timestamp_ms: int,
    ) -> _FakeMessage:
        topic = topic or self.spec.inputs[0]
        raw = value if isinstance(value, bytes) else self.encode_input(value)
        offset = self._offsets[(topic, partition)]
        self._offsets[(topic, partition)] += 1
        return _FakeMessage(
            topic=topic,
            partition=partition,
            offset=offset,
            value=raw,
            key=key,
            headers=headers,
            timestamp_ms=timestamp_ms,
        )

    def _outputs(
        self, record: Record[Any], *, limit: int | None = None
    ) -> dict[str, list[Produced]]:
        result = self.spec.handler(record)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        produced: dict[str, list[Produced]] = defaultdict(list)
        for output in normalize_outputs(result):
            encoded = self.codecs.encode(output, record)
            topic, value_bytes, key_bytes = encoded.topic, encoded.value, encoded.key
            if limit is not None and encoded.size > limit:
                raise OutputRejectedError(
                    f"output to {topic} is {encoded.size} bytes, over the limit of {limit}"
                )
            decoded_key = (
                None if key_bytes is None else self.codecs.key.deserialize(key_bytes, topic=topic)
            )
            decoded_value = (
                None
                if value_bytes is None
                else self.codecs.outputs[topic].deserialize(value_bytes, topic=topic)
            )
            produced[topic].append(
                Produced(topic, decoded_key, decoded_value, key_bytes, value_bytes, encoded.headers)
            )
        return dict(produced)


class _FakeMessage:
    """The subset of confluent_kafka.Message that decoding reads."""

    def __init__(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        value: bytes | None,
        key: str | None,
        headers: list[tuple[str, bytes | None]],
        timestamp_ms: int,
    ) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._value = value
        self._key = None if key is None else key.encode()
        self._headers = headers
        self._timestamp = timestamp_ms

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list[tuple[str, bytes | None]]:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)
