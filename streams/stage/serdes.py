"""The serdes of one stage, and what a handler's return value means."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from streams.exceptions import OutputTopicError
from streams.kafka.messages import MessageLike, decode_message
from streams.record import KeepKey, Output, Record
from streams.serde import Serde
from streams.spec import StageSpec

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

__all__ = ["Encoded", "StageSerdes", "normalize_outputs"]


class Encoded(NamedTuple):
    """One output, encoded: what the producer is given (a tuple: built for every output)."""

    topic: str
    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, bytes | None]]

    @property
    def size(self) -> int:
        return len(self.value or b"") + len(self.key or b"")


class StageSerdes:
    """The serdes of one stage, built (and checked against their schemas) at start-up."""

    def __init__(self, spec: StageSpec, registry: SchemaRegistryClient | None) -> None:
        self.spec = spec
        self._default_output = spec.default_output
        self.key: Serde[Any] = spec.key_codec.build(registry)
        self.input: Serde[Any] = spec.input_codec.build(registry)
        self.outputs: dict[str, Serde[Any]] = {
            topic: codec.build(registry) for topic, codec in spec.outputs.items()
        }

    def decode(self, message: MessageLike) -> Record[Any]:
        return decode_message(message, key=self.key, value=self.input)

    def encode(self, output: Output, record: Record[Any]) -> Encoded:
        """Encode one output; a topic the stage did not declare is an ``OutputTopicError``.

        That error is the stage's (its code names a topic it never declared), not the record's:
        the worker stops with exit code 5 instead of dead-lettering every record.
        """
        topic = output.topic or self._default_output
        if topic is None:
            raise OutputTopicError(
                f"stage {self.spec.group_id}: an output without a topic, and the stage has "
                f"{len(self.spec.outputs)} output topics",
                hint="name the topic: Output(value, topic=...)",
            )
        serde = self.outputs.get(topic)
        if serde is None:
            declared = ", ".join(self.spec.outputs) or "none"
            raise OutputTopicError(
                f"stage {self.spec.group_id}: the handler returned an output for topic "
                f"{topic!r}, which the stage does not declare (declared: {declared})",
                hint="add the topic to outputs= of the stage, or fix the topic name in the "
                "handler; the stage resumes at the record it stopped on",
            )
        key = record.key if output.key is KeepKey else output.key
        key_bytes = None if key is None else self.key.serialize(key, topic=topic)
        value = None if output.value is None else serde.serialize(output.value, topic=topic)
        # tuple.__new__: NamedTuple's own constructor is a Python-level call, once per output
        return tuple.__new__(Encoded, (topic, value, key_bytes, list(output.headers)))


def normalize_outputs(result: object) -> list[Output]:
    """A handler's return value as a list of Outputs (None, a value, an Output, or many)."""
    if result is None:
        return []
    if isinstance(result, Output):
        return [result]
    if isinstance(result, list | tuple):
        return [item if isinstance(item, Output) else Output(item) for item in result]
    return [Output(result)]
