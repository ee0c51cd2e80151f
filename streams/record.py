"""What a handler receives (Record) and what it returns (Output)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from streams import headers as _headers
from streams.headers import Headers

__all__ = ["Headers", "Output", "Record"]

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Record(Generic[V]):
    """One input record, decoded.

    ``key`` is the decoded key (str by default), ``value`` the decoded value (a pydantic model for
    Avro and JSON topics). ``topic``/``partition``/``offset`` say where it was read.
    """

    value: V
    key: str | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    headers: Headers = ()

    def header(self, name: str) -> bytes | None:
        """The last value of header ``name``, or None."""
        return _headers.get(self.headers, name)

    @property
    def coordinates(self) -> str:
        """``topic/partition@offset``: how logs and errors name this record."""
        return f"{self.topic}/{self.partition}@{self.offset}"

    @property
    def idempotency_key(self) -> str:
        """A key for side effects that is the same on every retry, restart and replay.

        It names where the record first entered this stage: a record read back from a retry
        topic, or replayed from the DLQ, carries its original coordinates in the
        ``streams.original.*`` headers, and those are used. Pass it to outside systems that
        deduplicate (an ``Idempotency-Key`` HTTP header, a unique column).
        """
        if not self.headers:  # read from its input topic with no headers: the common case
            return f"{self.topic}/{self.partition}@{self.offset}"
        original = _headers.original_coordinates(self.headers)
        if original is None:
            return self.coordinates
        topic, partition, offset = original
        return f"{topic}/{partition}@{offset}"


@dataclass(frozen=True, slots=True)
class Output:
    """One record a handler wants written.

    ``topic`` may be left out when the stage has exactly one output topic. ``key`` left as the
    default keeps the input record's key (so per-key order carries through the stage); pass
    ``key=None`` explicitly to write a record without a key.
    """

    value: object
    key: str | type[KeepKey] | None = field(default_factory=lambda: KeepKey)
    topic: str | None = None
    headers: Headers = ()


class KeepKey:
    """Marker: the output keeps the key of the input record."""
