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

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, NamedTuple

from streams import headers as h
from streams.headers import HeaderList
from streams.kafka.messages import MessageLike, message_headers

__all__ = [
    "HeaderRewriter",
    "Letter",
    "copied_headers",
    "escaped",
    "read_letter",
    "redriven_headers",
]

Format = Literal["streams", "spring", "connect", "none"]

_SPRING = "kafka_dlt-"
_SPRING_RETRY = "retry_topic-"  # Spring's retry-topic state, like our attempt and due headers
_CONNECT = "__connect.errors."
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
# Memo sizes: a DLQ holds few distinct original topics and header names; the bound only keeps
# a DLQ of ever-new names from growing the memo without end.
_MEMO = 4096


class Letter(NamedTuple):
    """One DLQ record and what its headers say: where it came from, why it failed.

    A named tuple, not a dataclass: one is built for every record a redrive reads, and a
    frozen dataclass of this size cost more to build than the rest of the record's judgement.
    """

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


@functools.lru_cache(maxsize=_MEMO)
def _topic_name(data: bytes) -> str | None:
    """The topic a header names, if Kafka would take the name (one regex per distinct name)."""
    name = data.decode("utf-8", "replace")
    return name if _TOPIC_NAME.match(name) else None


def _coordinates(
    topic: bytes | None, partition: bytes | None, offset: bytes | None, *, decimal_only: bool
) -> tuple[str, int, int] | None:
    name = None if topic is None else _topic_name(topic)
    if name is None:
        return None
    if decimal_only:
        p = int(partition) if partition is not None and partition.isdigit() else None
        o = int(offset) if offset is not None and offset.isdigit() else None
    else:
        p, o = _number(partition), _number(offset)
    if p is None or o is None or p < 0 or o < 0:
        return None
    return name, p, o


def _foreign(names: Iterable[str]) -> Format:
    """A record without our coordinates or reason: Spring's (first), Connect's, or neither."""
    connect = False
    for name in names:
        if name.startswith(_SPRING):
            return "spring"
        if name.startswith(_CONNECT):
            connect = True
    return "connect" if connect else "none"


def read_letter(message: MessageLike) -> Letter:
    """The record and its dead-letter metadata, whichever of the three formats it uses."""
    found = message_headers(message)
    # one dict of every header: the last value of a name wins, as headers.get; a null header
    # value stays None (streams.kafka.messages), which reads as an absent one here
    named = dict(found)
    get = named.get
    fmt: Format = "none"
    original: tuple[str, int, int] | None = None
    original_ts: int | None = None
    reason = error_class = error_message = None
    if h.ORIGINAL_TOPIC in named or h.ERROR_REASON in named:
        fmt = "streams"
        original = _coordinates(
            get(h.ORIGINAL_TOPIC),
            get(h.ORIGINAL_PARTITION),
            get(h.ORIGINAL_OFFSET),
            decimal_only=True,
        )
        original_ts = _number(get(h.ORIGINAL_TIMESTAMP))
        reason = _text(get(h.ERROR_REASON))
        error_class = _text(get(h.ERROR_CLASS))
        error_message = _text(get(h.ERROR_MESSAGE))
    elif found:
        fmt = _foreign(named)
    if fmt == "spring":
        original = _coordinates(
            get("kafka_dlt-original-topic"),
            get("kafka_dlt-original-partition"),
            get("kafka_dlt-original-offset"),
            decimal_only=False,
        )
        original_ts = _number(get("kafka_dlt-original-timestamp"))
        reason = "spring"
        error_class = _text(get("kafka_dlt-exception-fqcn"))
        error_message = _text(get("kafka_dlt-exception-message"))
    elif fmt == "connect":
        original = _coordinates(
            get(f"{_CONNECT}topic"),
            get(f"{_CONNECT}partition"),
            get(f"{_CONNECT}offset"),
            decimal_only=True,
        )
        stage = _text(get(f"{_CONNECT}stage"))
        reason = stage.lower() if stage else "connect"
        error_class = _text(get(f"{_CONNECT}exception.class.name"))
        error_message = _text(get(f"{_CONNECT}exception.message"))
    return Letter(  # positional, in the order of the fields: one is built per record
        message.topic() or "",
        message.partition() or 0,
        message.offset() or 0,
        message.timestamp()[1],
        message.key(),
        message.value(),
        found,
        fmt,
        original,
        original_ts,
        reason,
        error_class,
        error_message,
        _number(get(h.REPLAY_COUNT)) or 0,  # redrives
        h.TRUNCATED in named,  # truncated
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


@functools.lru_cache(maxsize=64)
def _keeper(drop: frozenset[str]) -> Callable[[str], bool]:
    """``_kept`` for one set of dropped names, memoized by name: a DLQ repeats a few names."""
    return functools.lru_cache(maxsize=_MEMO)(functools.partial(_kept, drop=drop))


class HeaderRewriter:
    """``redriven_headers`` for one task: its id and the names it drops, worked out once."""

    def __init__(self, task_id: str, drop: Iterable[str] = ()) -> None:
        self._kept = _keeper(frozenset(drop))
        self._replayed = (h.REPLAYED, task_id.encode())

    def __call__(self, letter: Letter, count: int) -> HeaderList:
        """The headers of ``letter`` redriven for the ``count``-th time."""
        kept = self._kept
        headers = [pair for pair in letter.headers if kept(pair[0])]
        if letter.original is not None and letter.format in {"spring", "connect"}:
            topic, partition, offset = letter.original
            headers += [
                (h.ORIGINAL_TOPIC, topic.encode()),
                (h.ORIGINAL_PARTITION, str(partition).encode()),
                (h.ORIGINAL_OFFSET, str(offset).encode()),
            ]
            if letter.original_timestamp_ms is not None:
                headers.append((h.ORIGINAL_TIMESTAMP, str(letter.original_timestamp_ms).encode()))
        headers += [
            self._replayed,
            (h.REPLAY_SOURCE, f"{letter.topic}/{letter.partition}@{letter.offset}".encode()),
            (h.REPLAY_COUNT, str(count).encode()),
        ]
        if letter.reason is not None:
            headers.append((h.REPLAY_PRIOR_REASON, letter.reason.encode()))
        return headers


def redriven_headers(
    letter: Letter, *, task_id: str, count: int, drop: Iterable[str] = ()
) -> HeaderList:
    """The headers of ``letter`` redriven by ``task_id`` for the ``count``-th time.

    ``drop``: more header names to leave out (a replication or tracing header, say, that must
    not be sent twice). A task builds one ``HeaderRewriter`` instead, for all its records.
    """
    return HeaderRewriter(task_id, drop)(letter, count)


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
