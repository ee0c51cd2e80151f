"""The record headers this framework writes: one namespace, ``streams.``, for every stage.

Retry and dead-letter records keep the original key, value and headers untouched and add:

=============================  ======================================================  =========
header                         meaning                                                 encoding
=============================  ======================================================  =========
streams.original.topic         topic the record was first read from                    utf-8
streams.original.partition     its partition                                           decimal
streams.original.offset        its offset                                              decimal
streams.original.timestamp     its timestamp, ms since the epoch                       decimal
streams.stage                  the stage (consumer group ``P.S``) that failed on it    utf-8
streams.attempt                attempts made so far (1 after the first failure)        decimal
streams.first.failure.ms       when the first attempt failed, ms since the epoch       decimal
streams.due.ms                 retry records: not to be processed before this time     decimal
streams.hold.until.ms          retry records of a ``RetryLater(delay_s)`` longer than   decimal
                               the longest tier: re-parked in that tier until then
streams.error.reason           retry, or: deserialization | validation | handler |    utf-8
                               dead-letter | retries-exhausted | output-rejected |
                               unroutable | late (an aggregate's window had closed)
streams.error.class            the exception's class (module.Name)                     utf-8
streams.error.message          its message, at most 1,000 bytes                        utf-8
streams.error.stack            DLQ records: the traceback, at most 4,000 bytes         utf-8
                               (the innermost part); retry records do not carry it
streams.truncated              DLQ records of reason ``unroutable`` whose value was cut decimal
                               to fit: the original value's length in bytes
streams.parked.behind          key-ordered retries: the record (topic/partition@offset) utf-8
                               of the same key this one waits behind; it was not tried
streams.replayed               records written by a redrive or copy task: its id       utf-8
                               (``streams dlq redrive``, ``streams replay copy``)
streams.replay.source          where that task read it: topic/partition@offset         utf-8
streams.replay.count           redrives of this record so far (1 after the first)      decimal
streams.replay.prior.reason    the ``streams.error.reason`` it had in the DLQ          utf-8
=============================  ======================================================  =========

The original coordinates are written once, at the first failure, and carried unchanged through
every retry, so they always name where the record entered the pipeline's stage. The replay
provenance headers (``streams.replayed``, ``streams.replay.*``) are carried the same way: a
redriven record that fails again reaches the DLQ with its redrive count, which is what stops a
record that fails forever from being redriven forever (``streams.replay``).
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence

__all__ = [
    "ATTEMPT",
    "DUE_MS",
    "ERROR_CLASS",
    "ERROR_MESSAGE",
    "ERROR_REASON",
    "ERROR_STACK",
    "FIRST_FAILURE_MS",
    "HOLD_UNTIL_MS",
    "ORIGINAL_OFFSET",
    "ORIGINAL_PARTITION",
    "ORIGINAL_TIMESTAMP",
    "ORIGINAL_TOPIC",
    "PARKED_BEHIND",
    "PREFIX",
    "PROVENANCE_PREFIX",
    "REPLAYED",
    "REPLAY_COUNT",
    "REPLAY_PRIOR_REASON",
    "REPLAY_SOURCE",
    "STAGE",
    "TRUNCATED",
    "HeaderList",
    "Headers",
    "get",
    "get_int",
    "original_coordinates",
    "without_ours",
]

PREFIX = "streams."
ORIGINAL_TOPIC = "streams.original.topic"
ORIGINAL_PARTITION = "streams.original.partition"
ORIGINAL_OFFSET = "streams.original.offset"
ORIGINAL_TIMESTAMP = "streams.original.timestamp"
STAGE = "streams.stage"
ATTEMPT = "streams.attempt"
FIRST_FAILURE_MS = "streams.first.failure.ms"
DUE_MS = "streams.due.ms"
HOLD_UNTIL_MS = "streams.hold.until.ms"
ERROR_REASON = "streams.error.reason"
ERROR_CLASS = "streams.error.class"
ERROR_MESSAGE = "streams.error.message"
ERROR_STACK = "streams.error.stack"
REPLAYED = "streams.replayed"
REPLAY_SOURCE = "streams.replay.source"
REPLAY_COUNT = "streams.replay.count"
REPLAY_PRIOR_REASON = "streams.replay.prior.reason"
# the prefix of the provenance headers above, streams.replayed included
PROVENANCE_PREFIX = "streams.replay"
ORIGINAL_PREFIX = "streams.original."
PARKED_BEHIND = "streams.parked.behind"
TRUNCATED = "streams.truncated"

# Bounded so that a DLQ record stays far below the broker's message size limit whatever failed.
MAX_MESSAGE_BYTES = 1000
MAX_STACK_BYTES = 4000

# A header's value may be null (None): Kafka keeps a null apart from an empty value, and so do
# the retry and dead-letter records that carry a record's headers over.
Headers = Sequence[tuple[str, bytes | None]]
HeaderList = list[tuple[str, bytes | None]]


def get(headers: Headers, name: str) -> bytes | None:
    """The last value of ``name``."""
    found = None
    for key, value in headers:
        if key == name:
            found = value
    return found


def get_int(headers: Headers, name: str) -> int | None:
    value = get(headers, name)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def original_coordinates(headers: Headers) -> tuple[str, int, int] | None:
    """(topic, partition, offset) from the ``streams.original.*`` headers, if all three are there.

    A record read back from a retry topic, or redriven from the DLQ, names where it first
    entered the stage this way; a record read from its input topic has none.
    """
    topic = get(headers, ORIGINAL_TOPIC)
    if topic is None:
        return None
    partition = get_int(headers, ORIGINAL_PARTITION)
    offset = get_int(headers, ORIGINAL_OFFSET)
    if partition is None or offset is None:
        return None
    return topic.decode("utf-8", errors="replace"), partition, offset


def without_ours(headers: Headers, *, keep_original: bool) -> HeaderList:
    """The headers minus ours; ``keep_original`` keeps ``streams.original.*`` and provenance.

    What a retry or DLQ record carries over: where the record entered the stage, and the replay
    provenance (``streams.replayed``, ``streams.replay.*``) if it was redriven.
    """
    return [
        (k, v)
        for k, v in headers
        if not k.startswith(PREFIX)
        or (keep_original and k.startswith((ORIGINAL_PREFIX, PROVENANCE_PREFIX)))
    ]


def truncate(text: str, limit: int, *, keep_end: bool = False) -> bytes:
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return data
    return (b"..." + data[-(limit - 3) :]) if keep_end else (data[: limit - 3] + b"...")


def error_headers(
    error: BaseException, reason: str, *, with_stack: bool = True
) -> list[tuple[str, bytes]]:
    """The ``streams.error.*`` headers for ``error``.

    ``with_stack=False`` leaves out ``streams.error.stack``: formatting a traceback reads the
    source of every frame and cost about as much as the rest of routing a record together
    (bench/README.md), so retry records carry the class and message only and the stack is
    written where someone will read it, on the dead-letter record.
    """
    cls = type(error)
    found = [
        (ERROR_REASON, reason.encode()),
        (ERROR_CLASS, f"{cls.__module__}.{cls.__qualname__}".encode()),
        (ERROR_MESSAGE, truncate(str(error) or cls.__name__, MAX_MESSAGE_BYTES)),
    ]
    if with_stack:
        stack = "".join(traceback.format_exception(error))
        found.append((ERROR_STACK, truncate(stack, MAX_STACK_BYTES, keep_end=True)))
    return found
