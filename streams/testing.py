"""Run a stage's handler on in-memory records, without a broker, for your own unit tests.

The same decoding, handler call and output routing as the real worker (and the same serdes,
so a JSON or Avro output that would fail to encode fails here too)::

    from streams.testing import StageHarness

    harness = StageHarness(pipeline.get("validate"))
    out = harness.send(b'{"order_id": "o-1", ...}', key="o-1")
    assert out["orders.placed"][0].value.order_id == "o-1"

Avro stages need a schema registry client; ``StageHarness`` uses confluent-kafka's in-process
mock registry (``mock://``) unless you pass one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient

from streams.exceptions import SerializationError
from streams.pipeline import StageSpec
from streams.record import Record
from streams.stage import StageCodecs, normalize_outputs

__all__ = ["Produced", "SerializationError", "StageHarness"]


@dataclass(frozen=True)
class Produced:
    """One output as the stage would write it: raw bytes, and decoded back for assertions."""

    topic: str
    key: str | None
    value: Any
    key_bytes: bytes | None
    value_bytes: bytes | None
    headers: list[tuple[str, bytes]]


class StageHarness:
    """Feeds raw or typed input records to one stage's handler, collects its outputs by topic."""

    def __init__(self, spec: StageSpec, *, registry: SchemaRegistryClient | None = None) -> None:
        if registry is None:
            registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
        self.spec = spec
        self.codecs = StageCodecs(spec, registry)
        self._offsets: dict[tuple[str, int], int] = defaultdict(int)

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
        headers: list[tuple[str, bytes]] | None = None,
        timestamp_ms: int = 0,
    ) -> dict[str, list[Produced]]:
        """Process one record (raw bytes are decoded; anything else is encoded first)."""
        topic = topic or self.spec.inputs[0]
        raw = value if isinstance(value, bytes) else self.encode_input(value)
        offset = self._offsets[(topic, partition)]
        self._offsets[(topic, partition)] += 1
        message = _FakeMessage(
            topic=topic,
            partition=partition,
            offset=offset,
            value=raw,
            key=key,
            headers=headers or [],
            timestamp_ms=timestamp_ms,
        )
        record = self.codecs.decode(message)  # type: ignore[arg-type]  # duck-typed Message
        return self._route(record)

    def _route(self, record: Record[Any]) -> dict[str, list[Produced]]:
        result = self.spec.handler(record)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        produced: dict[str, list[Produced]] = defaultdict(list)
        for output in normalize_outputs(result):
            topic, value_bytes, key_bytes, headers = self.codecs.encode(output, record)
            decoded_key = (
                None if key_bytes is None else self.codecs.key.deserialize(key_bytes, topic=topic)
            )
            decoded_value = (
                None
                if value_bytes is None
                else self.codecs.outputs[topic].deserialize(value_bytes, topic=topic)
            )
            produced[topic].append(
                Produced(topic, decoded_key, decoded_value, key_bytes, value_bytes, headers)
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
        headers: list[tuple[str, bytes]],
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

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)
