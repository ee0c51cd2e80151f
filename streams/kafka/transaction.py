"""One Kafka transaction at a time, as an explicit state machine.

::

    IDLE --begin--> OPEN --commit--> IDLE
                     |  \\--abort---> IDLE
                     |   (abortable error: caller aborts, then rewinds its consumer)
    any --fatal error or fencing--> BROKEN   (the producer must be recreated: ``reset()``)

The object owns the transactional producer, the records produced in the open transaction and
the input offsets that go with them. Commit sends the offsets with the consumer's group
metadata (KIP-447), then commits; both are retried on retriable errors within a deadline.
An indeterminate commit (still retriable at the deadline) marks the producer BROKEN: a new
producer with the same transactional.id resolves the outcome at ``init_transactions``, and the
caller then rewinds to the committed offsets, which reflect what really happened.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from streams.exceptions import OutputRejectedError, TransactionError
from streams.kafka.errors import FENCED_CODES, from_kafka_exception

__all__ = ["Refusal", "Transaction", "TxnState"]

log = logging.getLogger("streams.transaction")

# Delivery errors that say "this record will never be accepted" (not "try again").
_REJECTED = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_RECORD,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
    }
)

# The refusals that a smaller record would not get (the topic's or the producer's size limit).
_TOO_LARGE = frozenset(
    {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG_SIZE, KafkaError.RECORD_LIST_TOO_LARGE}
)


@dataclasses.dataclass(frozen=True)
class Refusal:
    """The broker refused a record for good: which input record it came from, and why.

    ``too_large``: refused for its size (or the size of the batch it was in), so the topic's
    limit may have changed since the producer was set up.
    """

    origin: tuple[str, int, int]
    topic: str
    too_large: bool
    reason: str


# When the local queue is full, serve delivery reports for this long before trying again.
_QUEUE_FULL_POLL_S = 0.05


class TxnState(enum.Enum):
    IDLE = "idle"
    OPEN = "open"
    BROKEN = "broken"


_ALLOWED = {
    ("begin", TxnState.IDLE),
    ("produce", TxnState.OPEN),
    ("commit", TxnState.OPEN),
    ("abort", TxnState.OPEN),
    ("abort", TxnState.IDLE),
}
# The state changes the diagram above allows: (from, to). Anything may break; only reset()
# leaves BROKEN (to IDLE, with a new producer).
_TRANSITIONS = {
    (TxnState.IDLE, TxnState.OPEN),
    (TxnState.OPEN, TxnState.IDLE),
    (TxnState.IDLE, TxnState.IDLE),
    (TxnState.IDLE, TxnState.BROKEN),
    (TxnState.OPEN, TxnState.BROKEN),
    (TxnState.BROKEN, TxnState.BROKEN),
    (TxnState.BROKEN, TxnState.IDLE),
}


class Transaction:
    """The transactional producer of one worker and the transaction it has open."""

    def __init__(
        self,
        producer_config: Mapping[str, Any],
        *,
        deadline_s: float,
        on_rejected: Callable[[Refusal], None] | None = None,
    ) -> None:
        self._on_rejected = on_rejected
        self._config = dict(producer_config)
        self.transactional_id = str(self._config["transactional.id"])
        self.fatal_reason: KafkaError | None = None
        self._deadline_s = deadline_s
        self._producer = self._new_producer()
        self.state = TxnState.IDLE  # the initial state: no transition to check
        self.opened_at = 0.0
        self.records = 0
        self.delivery_error: str | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def _on_error(self, error: KafkaError) -> None:
        # librdkafka reports the reason of a fatal error here (fenced, say); the calls that fail
        # afterwards only say "_FATAL"
        if error.fatal():
            self.fatal_reason = error
            log.error("producer fatal error: %s: %s", error.name(), error.str())

    def _map(self, error: KafkaException, operation: str) -> TransactionError:
        try:
            self._producer.poll(0)  # serve a pending error callback first
        except KafkaException as polled:
            # the client raises the fatal error itself from poll() once it is known
            if polled.args and isinstance(polled.args[0], KafkaError):
                self.fatal_reason = self.fatal_reason or polled.args[0]
        mapped = from_kafka_exception(error, operation=operation)
        reason = self.fatal_reason
        if reason is not None and mapped.fatal and reason.code() in FENCED_CODES:
            mapped = mapped.replace(
                code="_FENCED",
                message=f"{mapped.message} (fatal reason: {reason.name()}: {reason.str()})",
            )
        assert isinstance(mapped, TransactionError)  # noqa: S101 - transactional=True
        return mapped

    def _to(self, state: TxnState) -> None:
        """Move to ``state``; a change the state diagram does not allow is a bug, said loudly."""
        if (self.state, state) not in _TRANSITIONS:
            raise TransactionError(
                f"transaction state {self.state.value} -> {state.value} is not allowed",
                fatal=True,
            )
        self.state = state

    def _new_producer(self) -> Producer:
        self.fatal_reason = None
        producer = Producer({**self._config, "error_cb": self._on_error})
        deadline = time.monotonic() + self._deadline_s
        while True:
            try:
                producer.init_transactions(max(1.0, deadline - time.monotonic()))
            except KafkaException as error:
                mapped = from_kafka_exception(error, operation="init_transactions")
                if mapped.retriable and time.monotonic() < deadline:
                    continue  # resumable: calling again resumes the background work
                raise mapped from error
            return producer

    def reset(self, producer_config: Mapping[str, Any] | None = None) -> None:
        """Recreate the producer (same transactional.id): fences and resolves the old one.

        ``producer_config`` replaces the settings (the transactional.id stays the same).
        """
        if producer_config is not None:
            self._config = {**producer_config, "transactional.id": self.transactional_id}
        old = self._producer
        self._to(TxnState.BROKEN)
        try:
            old.flush(0)
        except KafkaException:
            log.debug("flush of the broken producer failed", exc_info=True)
        del old
        self._producer = self._new_producer()
        self._to(TxnState.IDLE)
        self.records = 0
        self.delivery_error = None

    def _require(self, operation: str) -> None:
        if (operation, self.state) not in _ALLOWED:
            raise TransactionError(
                f"{operation} is not allowed while the transaction is {self.state.value}",
                fatal=True,
            )

    @property
    def is_open(self) -> bool:
        return self.state is TxnState.OPEN

    @property
    def age_s(self) -> float:
        return time.monotonic() - self.opened_at if self.is_open else 0.0

    # -- operations ------------------------------------------------------------------------

    def begin(self) -> None:
        self._require("begin")
        try:
            self._producer.begin_transaction()
        except KafkaException as error:
            self._to(TxnState.BROKEN)
            raise self._map(error, "begin_transaction") from error
        self._to(TxnState.OPEN)
        self.opened_at = time.monotonic()
        self.records = 0
        self.delivery_error = None

    def _on_delivery(self, origin: tuple[str, int, int] | None, error: Any, message: Any) -> None:
        if error is None:
            return
        if self.delivery_error is None:
            # the transaction is now abortable; commit will fail and say so
            self.delivery_error = str(error)
        if origin is not None and self._on_rejected is not None and error.code() in _REJECTED:
            self._on_rejected(
                Refusal(
                    origin=origin,
                    topic=str(message.topic() if message is not None else ""),
                    too_large=error.code() in _TOO_LARGE,
                    reason=f"the broker refused a record for {message.topic()}: {error.str()}",
                )
            )

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None,
        *,
        origin: tuple[str, int, int] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Produce in the open transaction; ``partition`` None lets the partitioner choose.

        ``timestamp_ms`` None stamps the record with the time of the write (a replay passes
        the record's original timestamp).

        Raises ``OutputRejectedError`` (the transaction still open and usable) when the client
        refuses the record itself, before queueing it: too large for ``message.max.bytes``.
        """
        if self.state is not TxnState.OPEN:  # the one check of _require, inline: hot path
            self._require("produce")
        while True:
            try:
                self._producer.produce(
                    topic,
                    value,
                    key,
                    partition=-1 if partition is None else partition,  # -1: partitioner's
                    headers=list(headers) if headers else None,
                    on_delivery=functools.partial(self._on_delivery, origin),
                    timestamp=timestamp_ms or 0,  # 0: the client's clock
                )
            except BufferError:
                self._producer.poll(_QUEUE_FULL_POLL_S)
                continue
            except KafkaException as error:
                refused = error.args[0] if error.args else None
                if isinstance(refused, KafkaError) and refused.code() in _REJECTED:
                    # refused before it was queued (too large for this producer): the
                    # transaction is untouched, and the caller routes the record aside
                    raise OutputRejectedError(
                        f"the producer refused a record for {topic}: {refused.str()}"
                    ) from error
                mapped = self._map(error, f"produce to {topic}")
                if mapped.fatal:
                    self._to(TxnState.BROKEN)
                raise mapped from error
            break
        self.records += 1

    def poll(self) -> None:
        """Serve delivery reports (cheap; call once per loop); a fatal error is kept for later."""
        try:
            self._producer.poll(0)
        except KafkaException as error:
            if error.args and isinstance(error.args[0], KafkaError):
                self.fatal_reason = self.fatal_reason or error.args[0]

    def commit(self, offsets: Mapping[tuple[str, int], int], group_metadata: Any) -> None:
        """Send offsets (next offset to read, per partition) and commit, within the deadline.

        Raises TransactionError: ``requires_abort`` -> call ``abort()`` and rewind;
        ``fatal`` -> call ``reset()`` and rewind. State is IDLE after success.
        """
        self._require("commit")
        deadline = time.monotonic() + self._deadline_s
        if offsets:
            partitions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            self._retrying(
                lambda: self._producer.send_offsets_to_transaction(
                    partitions, group_metadata, max(1.0, deadline - time.monotonic())
                ),
                "send_offsets_to_transaction",
                deadline,
            )
        self._retrying(
            lambda: self._producer.commit_transaction(max(1.0, deadline - time.monotonic())),
            "commit_transaction",
            deadline,
        )
        self._to(TxnState.IDLE)

    def abort(self) -> None:
        """Abort the open transaction; a failing abort leaves the producer BROKEN."""
        self._require("abort")
        if self.state is TxnState.IDLE:
            return
        deadline = time.monotonic() + self._deadline_s
        # Let in-flight produce requests (and their AddPartitionsToTxn) finish first: aborting
        # while they are in flight got INVALID_TXN_STATE from a 4.1 broker here (fatal).
        try:
            self._producer.flush(min(5.0, self._deadline_s))
        except KafkaException:
            log.debug("flush before abort failed", exc_info=True)
        try:
            self._retrying(
                lambda: self._producer.abort_transaction(max(1.0, deadline - time.monotonic())),
                "abort_transaction",
                deadline,
            )
        except TransactionError:
            self._to(TxnState.BROKEN)  # only a new producer can resolve a failed abort
            raise
        self._to(TxnState.IDLE)

    def _retrying(self, call: Callable[[], None], operation: str, deadline: float) -> None:
        while True:
            try:
                call()
            except KafkaException as error:
                mapped = self._map(error, operation)
                if mapped.code == "_FENCED":
                    self._to(TxnState.BROKEN)
                    raise mapped.replace(fatal=True) from error
                if mapped.retriable and not mapped.requires_abort:
                    if time.monotonic() < deadline:
                        log.warning("%s: retriable error, retrying: %s", operation, mapped)
                        time.sleep(0.1)
                        continue
                    # indeterminate: the outcome is unknown; a new producer resolves it
                    self._to(TxnState.BROKEN)
                    raise mapped.replace(fatal=True) from error
                if mapped.fatal and not mapped.requires_abort:
                    self._to(TxnState.BROKEN)
                raise mapped from error
            return

    def close(self, timeout_s: float = 5.0) -> None:
        if self.is_open:
            try:
                self.abort()
            except TransactionError:
                log.warning("abort at close failed; the coordinator will time it out")
        self._producer.flush(timeout_s)
