"""What a DLQ record says about itself, in three header formats, and the headers it leaves with.

``read_letter`` reads a dead-letter record in one pass over its headers:

=========  ===============================  =====================================================
format     original coordinates             reason / error class
=========  ===============================  =====================================================
streams    ``streams.original.*`` (decimal)  ``streams.error.reason`` / ``streams.error.class``
spring     ``kafka_dlt-original-topic``,     ``spring`` / ``kafka_dlt-exception-fqcn``
           ``-partition`` (4-byte big-endian
           int), ``-offset``, ``-timestamp``
           (8-byte big-endian longs)
connect    ``__connect.errors.topic``,       ``__connect.errors.stage`` (lower case) /
           ``.partition``, ``.offset``       ``__connect.errors.exception.class.name``
           (decimal)
=========  ===============================  =====================================================

A Spring or Connect header that holds decimal text instead is read as well. Coordinates that
are missing or do not parse (a topic name Kafka would refuse, a negative offset) leave the
record *unroutable*: a redrive skips it and says how many.

``redriven_headers`` is what a redriven record carries: its own headers in their order
(duplicate names included), minus the failure state (``streams.error.*``, ``streams.attempt``,
``streams.due.ms`` and the other per-failure headers of ``streams.headers``, and the Spring and
Connect error headers), with ``streams.original.*`` kept (added from the foreign headers when
the record had none), then the provenance: ``streams.replayed`` (the task), ``streams.replay.
source`` (the DLQ coordinates), ``streams.replay.count`` and ``streams.replay.prior.reason``.
The original coordinates are the idempotency key (``Record.idempotency_key``), so it does not
change: a sink that deduplicates on it stays single.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from streams import headers as h
from streams.headers import HeaderList
from streams.kafka.messages import MessageLike, message_headers

__all__ = ["Letter", "copied_headers", "escaped", "read_letter", "redriven_headers"]

Format = Literal["streams", "spring", "connect", "none"]

_SPRING = "kafka_dlt-"
_SPRING_RETRY = "retry_topic-"  # Spring's retry-topic state, like our attempt and due headers
_CONNECT = "__connect.errors."
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


@dataclass(frozen=True, slots=True)
class Letter:
    """One DLQ record and what its headers say: where it came from, why it failed."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]  # a null value stays None
    format: Format
    original: tuple[str, int, int] | None  # (topic, partition, offset); None: unroutable
    original_timestamp_ms: int | None
    reason: str | None
    error_class: str | None
    error_message: str | None
    redrives: int  # streams.replay.count: how often it was redriven before it came back
    truncated: bool  # its value was cut to fit the DLQ (reason unroutable): never redriven

    @property
    def coordinates(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}"


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", "replace")


def _number(data: bytes | None) -> int | None:
    """Decimal text, or a 4- or 8-byte big-endian integer (Spring's encoding)."""
    if data is None:
        return None
    if data.isdigit():
        return int(data)
    if len(data) in {4, 8}:
        return int.from_bytes(data, "big", signed=True)
    return None


def _coordinates(
    topic: bytes | None, partition: bytes | None, offset: bytes | None, *, decimal_only: bool
) -> tuple[str, int, int] | None:
    name = _text(topic)
    if name is None or not _TOPIC_NAME.match(name):
        return None
    if decimal_only:
        p = int(partition) if partition is not None and partition.isdigit() else None
        o = int(offset) if offset is not None and offset.isdigit() else None
    else:
        p, o = _number(partition), _number(offset)
    if p is None or o is None or p < 0 or o < 0:
        return None
    return name, p, o


# Over 50 lines: one pass over the headers for three formats, kept together so that the hot
# path of a redrive reads each header once.
def read_letter(message: MessageLike) -> Letter:
    """The record and its dead-letter metadata, whichever of the three formats it uses."""
    found = message_headers(message)
    # a null header value stays None (streams.kafka.messages): it reads as an absent one here
    ours: dict[str, bytes | None] = {}
    spring: dict[str, bytes | None] = {}
    connect: dict[str, bytes | None] = {}
    for name, value in found:
        if name.startswith(h.PREFIX):
            ours[name] = value  # the last value wins, as headers.get
        elif name.startswith(_SPRING):
            spring[name] = value
        elif name.startswith(_CONNECT):
            connect[name] = value
    fmt: Format = "none"
    original: tuple[str, int, int] | None = None
    original_ts: int | None = None
    reason = error_class = error_message = None
    if h.ORIGINAL_TOPIC in ours or h.ERROR_REASON in ours:
        fmt = "streams"
        original = _coordinates(
            ours.get(h.ORIGINAL_TOPIC),
            ours.get(h.ORIGINAL_PARTITION),
            ours.get(h.ORIGINAL_OFFSET),
            decimal_only=True,
        )
        original_ts = _number(ours.get(h.ORIGINAL_TIMESTAMP))
        reason = _text(ours.get(h.ERROR_REASON))
        error_class = _text(ours.get(h.ERROR_CLASS))
        error_message = _text(ours.get(h.ERROR_MESSAGE))
    elif spring:
        fmt = "spring"
        original = _coordinates(
            spring.get("kafka_dlt-original-topic"),
            spring.get("kafka_dlt-original-partition"),
            spring.get("kafka_dlt-original-offset"),
            decimal_only=False,
        )
        original_ts = _number(spring.get("kafka_dlt-original-timestamp"))
        reason = "spring"
        error_class = _text(spring.get("kafka_dlt-exception-fqcn"))
        error_message = _text(spring.get("kafka_dlt-exception-message"))
    elif connect:
        fmt = "connect"
        original = _coordinates(
            connect.get(f"{_CONNECT}topic"),
            connect.get(f"{_CONNECT}partition"),
            connect.get(f"{_CONNECT}offset"),
            decimal_only=True,
        )
        stage = _text(connect.get(f"{_CONNECT}stage"))
        reason = stage.lower() if stage else "connect"
        error_class = _text(connect.get(f"{_CONNECT}exception.class.name"))
        error_message = _text(connect.get(f"{_CONNECT}exception.message"))
    topic = message.topic() or ""
    return Letter(
        topic=topic,
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        timestamp_ms=message.timestamp()[1],
        key=message.key(),
        value=message.value(),
        headers=found,
        format=fmt,
        original=original,
        original_timestamp_ms=original_ts,
        reason=reason,
        error_class=error_class,
        error_message=error_message,
        redrives=_number(ours.get(h.REPLAY_COUNT)) or 0,
        truncated=h.TRUNCATED in ours,
    )


def _kept(name: str, drop: frozenset[str]) -> bool:
    """Whether a redrive keeps header ``name`` of a dead-letter record."""
    if name in drop:
        return False
    if name.startswith(h.PREFIX):
        # every other header of ours is failure state (error, attempt, due, stage, ...) or the
        # provenance of an earlier redrive, written afresh: the record starts a new life, with
        # a full retry budget, due now
        return name.startswith(h.ORIGINAL_PREFIX)
    return not name.startswith((_SPRING, _SPRING_RETRY, _CONNECT))


def redriven_headers(
    letter: Letter, *, task_id: str, count: int, drop: Iterable[str] = ()
) -> HeaderList:
    """The headers of ``letter`` redriven by ``task_id`` for the ``count``-th time.

    ``drop``: more header names to leave out (a replication or tracing header, say, that must
    not be sent twice).
    """
    dropped = frozenset(drop)
    kept = [(name, value) for name, value in letter.headers if _kept(name, dropped)]
    if letter.format in {"spring", "connect"} and letter.original is not None:
        topic, partition, offset = letter.original
        kept += [
            (h.ORIGINAL_TOPIC, topic.encode()),
            (h.ORIGINAL_PARTITION, str(partition).encode()),
            (h.ORIGINAL_OFFSET, str(offset).encode()),
        ]
        if letter.original_timestamp_ms is not None:
            kept.append((h.ORIGINAL_TIMESTAMP, str(letter.original_timestamp_ms).encode()))
    kept += [
        (h.REPLAYED, task_id.encode()),
        (h.REPLAY_SOURCE, letter.coordinates.encode()),
        (h.REPLAY_COUNT, str(count).encode()),
    ]
    if letter.reason is not None:
        kept.append((h.REPLAY_PRIOR_REASON, letter.reason.encode()))
    return kept


def copied_headers(
    found: Sequence[tuple[str, bytes | None]], *, task_id: str, source: str
) -> HeaderList:
    """A copied record's headers: all of its own, in order, then the task and its source."""
    return [*found, (h.REPLAYED, task_id.encode()), (h.REPLAY_SOURCE, source.encode())]


def escaped(data: bytes | None) -> str | None:
    """Bytes as text for people: UTF-8 where it is, ``\\xNN`` for other bytes and controls."""
    if data is None:
        return None
    text = data.decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
