"""The exactly-once loop of one stage worker: consume, handle, produce + offsets in one transaction.

One ``read_committed`` consumer (auto-commit off, cooperative-sticky) and one transactional
producer per worker. Each transaction holds the outputs of a batch and the input offsets they
came from, bounded by a record count and a time. What happens on each kind of failure:

- retriable (timeouts, coordinator moves): retried inside ``Transaction`` within a deadline;
- abortable (a failed delivery, a generation error after a rebalance): abort, then rewind every
  assigned partition to its committed offset, so the aborted records are processed again;
- fatal (including an indeterminate commit): a new producer with the same transactional.id,
  then rewind. Fenced by another live worker with the same id: stop (exit code 4);
- partitions revoked: commit what was processed first; partitions lost: abort and rewind;
- a record that cannot be decoded, or a handler that raises: the records before it are
  committed, then the stage stops with ``StageStoppedError`` naming the record (exit code 3)
  rather than skip it. (Routing such records to retry and dead-letter topics is a later layer.)
- SIGTERM (``request_stop``): finish the batch in flight, commit, leave the group, return.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from streams import headers
from streams.codecs import registry_for
from streams.config import KafkaSettings, StageSettings
from streams.exceptions import (
    KafkaClientError,
    SerializationError,
    StageStoppedError,
    StreamsError,
    TopologyError,
    TransactionError,
)
from streams.kafka.clients import partition_names, worker_consumer_config
from streams.kafka.transaction import Transaction
from streams.ordering import KeyOrderLedger, OrderKey, Waiting
from streams.pipeline import StageSpec
from streams.record import KeepKey, Output, Record
from streams.retry import RetryDecision, RetryGate
from streams.runtime.stats import StageStats
from streams.serde import Serde

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

__all__ = [
    "FencedError",
    "OutputRejectedError",
    "StageCodecs",
    "StageRunner",
    "decode_message",
    "message_headers",
    "normalize_outputs",
]

log = logging.getLogger("streams.stage")

TP = tuple[str, int]


class FencedError(StageStoppedError):
    """Another live worker uses this worker's transactional.id: this one must stop."""

    default_hint = (
        "two workers run with the same --slot; run each slot once (the supervisor does this)"
    )


# Topics created a moment ago may not show in the metadata yet (seen on a broker that had just
# started); a stage waits this long for them before it reports them missing.
_TOPIC_WAIT_S = 20.0
# How long a fenced worker looks for a twin in its group before it concludes there is none.
# A twin's consumer joins right after its init_transactions(); the wait only delays recovery
# from a broker restart, which takes longer than this anyway.
_TWIN_WAIT_S = 12.0
# How often an idle worker looks for positions that moved past transaction markers alone.
_IDLE_COMMIT_INTERVAL_S = 2.0


class OutputRejectedError(StreamsError):
    """An output of the record is larger than the broker accepts (or the broker refused it)."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _BatchAbandoned(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The transaction was aborted mid-batch and the input rewound: drop the rest of the batch."""


class StageCodecs:
    """The serdes of one stage, built (and checked against their schemas) at start-up."""

    def __init__(self, spec: StageSpec, registry: SchemaRegistryClient | None) -> None:
        self.spec = spec
        self._default_output = spec.default_output
        self.key: Serde[Any] = spec.key_codec.build(registry)
        self.input: Serde[Any] = spec.input_codec.build(registry)
        self.outputs: dict[str, Serde[Any]] = {
            topic: codec.build(registry) for topic, codec in spec.outputs.items()
        }

    def decode(self, message: Message) -> Record[Any]:
        return decode_message(message, key=self.key, value=self.input)

    def encode(
        self, output: Output, record: Record[Any]
    ) -> tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]:
        topic = output.topic or self._default_output
        if topic is None:
            raise StageStoppedError(
                f"stage {self.spec.group_id}: an output without a topic, and the stage has "
                f"{len(self.spec.outputs)} output topics",
                hint="name the topic: Output(value, topic=...)",
            )
        serde = self.outputs.get(topic)
        if serde is None:
            raise StageStoppedError(
                f"stage {self.spec.group_id}: output to undeclared topic {topic!r}",
                hint=f"declare it in outputs= (declared: {', '.join(self.spec.outputs)})",
            )
        key = record.key if output.key is KeepKey else output.key
        key_bytes = None if key is None else self.key.serialize(key, topic=topic)
        value = None if output.value is None else serde.serialize(output.value, topic=topic)
        return topic, value, key_bytes, list(output.headers)


def decode_message(message: Message, *, key: Serde[Any], value: Serde[Any]) -> Record[Any]:
    """A consumed message as a typed Record; a SerializationError names it and keeps its bytes."""
    topic = message.topic() or ""
    partition = message.partition() or 0
    offset = message.offset() or 0
    raw_value = message.value()
    raw_key = message.key()
    try:
        # the serdes reject a null value (a tombstone) with a SerializationError too
        decoded_value = value.deserialize(raw_value, topic=topic)
        decoded_key = None if raw_key is None else key.deserialize(bytes(raw_key), topic=topic)
    except SerializationError as error:
        error.topic, error.partition, error.offset = topic, partition, offset
        error.raw = None if raw_value is None else bytes(raw_value)
        raise
    return Record(
        value=decoded_value,
        key=decoded_key,
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp_ms=message.timestamp()[1],
        headers=message_headers(message),
    )


def _carried_headers(
    message: Message, original: tuple[tuple[str, bytes], ...]
) -> list[tuple[str, bytes]]:
    """What a record written to a retry topic or the DLQ carries over from ``message``.

    The record's own headers minus ours, plus ``streams.original.*``: kept from an earlier
    failure, or written now from the message's coordinates at its first failure.
    """
    carried = headers.without_ours(original, keep_original=True)
    if headers.get(original, headers.ORIGINAL_TOPIC) is None:
        carried += [
            (headers.ORIGINAL_TOPIC, (message.topic() or "").encode()),
            (headers.ORIGINAL_PARTITION, str(message.partition()).encode()),
            (headers.ORIGINAL_OFFSET, str(message.offset()).encode()),
            (headers.ORIGINAL_TIMESTAMP, str(message.timestamp()[1]).encode()),
        ]
    return carried


def message_headers(message: Message) -> tuple[tuple[str, bytes], ...]:
    """A message's headers as (name, bytes) pairs; a null header value becomes b""."""
    raw = message.headers()
    if not raw:
        return ()  # the common case, on the hot path
    pairs = raw.items() if isinstance(raw, dict) else raw
    return tuple(
        (name, data.encode() if isinstance(data, str) else bytes(data or b""))
        for name, data in pairs
    )


def normalize_outputs(result: object) -> list[Output]:
    """A handler's return value as a list of Outputs (None, a value, an Output, or many)."""
    if result is None:
        return []
    if isinstance(result, Output):
        return [result]
    if isinstance(result, list | tuple):
        return [item if isinstance(item, Output) else Output(item) for item in result]
    return [Output(result)]


class StageRunner:
    """Runs one stage in this process until stopped. One instance = one worker slot."""

    def __init__(
        self,
        spec: StageSpec,
        *,
        slot: int = 0,
        kafka: KafkaSettings | None = None,
        settings: StageSettings | None = None,
        registry: SchemaRegistryClient | None = None,
        on_stats: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.spec = spec
        self.slot = slot
        self.kafka = kafka or KafkaSettings()
        self.settings = settings or StageSettings()
        if registry is None:
            codecs = [spec.key_codec, spec.input_codec, *spec.outputs.values()]
            registry = registry_for(codecs, self.kafka.schema_registry_url)
        self._registry = registry
        self.codecs = StageCodecs(spec, registry)  # fails here, at start-up, on a bad schema
        self.stats = StageStats()
        self._on_stats = on_stats
        self._next_offset: dict[TP, int] = {}
        self._retry_topics = frozenset(spec.retry_topics)
        self._gate = RetryGate()
        # key-ordered retries (streams/ordering.py): the records waiting in retry, per key
        self._ordering = KeyOrderLedger() if spec.retry.key_ordered else None
        self._seeked: set[TP] = set()  # partitions sought since the last commit
        # input records whose output the broker refused (in a transaction since aborted): on
        # reprocessing they go to the DLQ instead of failing the transaction again
        self._rejected: dict[tuple[str, int, int], str] = {}
        self._in_txn = 0  # input records processed in the open transaction
        self._committed_at: dict[TP, int] = {}  # what this worker last committed, per partition
        self._idle_checked = 0.0
        self.heartbeat = time.monotonic()  # the loop's last turn; the worker's watchdog reads it
        self._rewind_pending = False
        self._stop_requested = False
        self._consumer: Consumer | None = None
        self._txn: Transaction | None = None

    # -- clients ---------------------------------------------------------------------------

    def _consumer_config(self) -> dict[str, Any]:
        config = worker_consumer_config(
            self.kafka, self.settings, group_id=self.spec.group_id, slot=self.slot
        )
        if self._ordering is not None:
            # range gives partition p of every topic of the stage to one worker: the worker
            # that reads a key's input partition also reads its retry partitions
            config["partition.assignment.strategy"] = "range"
        return config

    def _producer_config(self) -> dict[str, Any]:
        return {
            **self.kafka.client_config(),
            "client.id": f"{self.spec.group_id}.{self.slot}.producer",
            "transactional.id": self.spec.transactional_id(self.slot),
            "transaction.timeout.ms": self.settings.transaction_timeout_ms,
            # batching inside the transaction window; commit flushes at once regardless
            "linger.ms": 5,
            "batch.size": 262144,
            # room for our headers on top of the largest output the stage lets through
            "message.max.bytes": self.settings.max_message_bytes + 65536,
        }

    # -- public ----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the batch in flight, commit, and return from ``run`` (SIGTERM calls this)."""
        self._stop_requested = True

    def run(self, *, max_records: int | None = None, idle_timeout_s: float | None = None) -> None:
        """Consume and process until ``request_stop`` (or the optional limits, for tests)."""
        self._txn = Transaction(
            self._producer_config(),
            deadline_s=self.settings.transaction_deadline_s,
            on_rejected=self._rejected.__setitem__,
        )
        consumer = Consumer(self._consumer_config())
        self._consumer = consumer
        self._require_topics(consumer)
        consumer.subscribe(
            self.spec.subscriptions,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info(
            "stage started",
            extra={
                "stage": self.spec.group_id,
                "slot": self.slot,
                "transactional_id": self._txn.transactional_id,
                "inputs": list(self.spec.inputs),
                "outputs": list(self.spec.outputs),
            },
        )
        last_stats = time.monotonic()
        last_record = time.monotonic()
        try:
            while not self._stop_requested:
                self.heartbeat = time.monotonic()
                self._gate.resume_due(consumer, _now_ms())
                messages = self._consume_batch()
                if messages:
                    last_record = time.monotonic()
                self._process(messages)
                self._maybe_commit(force=False)
                if time.monotonic() - last_stats >= self.settings.stats_interval_s:
                    self._emit_stats()
                    last_stats = time.monotonic()
                if max_records is not None and self.stats.consumed >= max_records:
                    break
                if idle_timeout_s is not None and time.monotonic() - last_record > idle_timeout_s:
                    break
            self._maybe_commit(force=True)
        except StageStoppedError:
            self._abort_quietly()
            raise
        finally:
            self._emit_stats()
            self._close()

    def _require_topics(self, consumer: Consumer) -> None:
        """Fail at start-up, clearly, if a topic of the stage does not exist."""
        needed = [*self.spec.subscriptions, *self.spec.outputs, self.spec.dlq_topic]
        deadline = time.monotonic() + _TOPIC_WAIT_S
        while True:
            try:
                existing = consumer.list_topics(timeout=30).topics
            except KafkaException as error:
                consumer.close()
                raise KafkaClientError(
                    f"stage {self.spec.group_id}: cannot reach Kafka at "
                    f"{self.kafka.bootstrap_servers}: {error}",
                    hint="check STREAMS_BOOTSTRAP_SERVERS and that the broker runs",
                ) from error
            missing = [name for name in needed if name not in existing]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(1)  # just created: the broker's metadata can lag behind for a moment
        if missing:
            consumer.close()
            raise TopologyError(
                f"stage {self.spec.group_id}: missing topics {', '.join(missing)}",
                hint=f"create them: streams topics create MODULE:{self.spec.pipeline} "
                "(the stage never creates topics by itself)",
            )
        if self._ordering is not None:
            counts = {name: len(existing[name].partitions) for name in self.spec.subscriptions}
            if len(set(counts.values())) > 1:
                consumer.close()
                raise TopologyError(
                    f"stage {self.spec.group_id}: key-ordered retries need its inputs and retry "
                    f"topics to have the same number of partitions, found {counts}",
                    hint="give the retry topics the inputs' partition count (Pipeline("
                    "partitions=...)), or drop key_ordered",
                )

    # -- the loop --------------------------------------------------------------------------

    def _consume_batch(self) -> list[Message]:
        assert self._consumer is not None  # noqa: S101 - set in run()
        assert self._txn is not None  # noqa: S101
        self._txn.poll()
        room = self.settings.batch_max_records - (self._in_txn if self._txn.is_open else 0)
        count = max(1, min(self.settings.consume_max_records, room))
        timeout = 0.1
        if self._txn.is_open:
            left = self.settings.batch_max_ms / 1000 - self._txn.age_s
            timeout = max(0.0, min(timeout, left))
        messages = self._consumer.consume(num_messages=count, timeout=timeout)
        if self._rewind_pending:
            # a rebalance callback aborted the transaction inside consume(): what it returned
            # may lie beyond the rewind point and is read again after the seek
            self._rewind()
            return []
        return messages

    def _process(self, messages: list[Message]) -> None:
        if not messages:
            return
        began = time.monotonic()
        good: list[Message] = []
        for message in messages:
            error = message.error()
            if error is None:
                good.append(message)
            elif error.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
                continue
            elif error.fatal() or error.code() == KafkaError._FATAL:  # noqa: SLF001
                # the consumer is dead (a static member fenced after a broker restart, say):
                # exit 1 so that the supervisor starts a fresh one; nothing was committed
                raise KafkaClientError(
                    f"consumer fatal error: {error.str()}",
                    fatal=True,
                    hint="the supervisor restarts the worker; if it repeats, check that each "
                    "--slot runs once",
                )
            else:
                log.warning("consumer error (librdkafka retries): %s", error.str())
        try:
            ready = self._hold_not_due(good)
            if self.spec.is_async:
                self._process_async(ready)
            else:
                for message in ready:
                    self._handle_one(message)
        except _BatchAbandoned:
            log.info("batch abandoned after an aborted transaction; input rewound")
        self.stats.observe_batch(time.monotonic() - began)

    def _hold_not_due(self, messages: list[Message]) -> list[Message]:
        """Drop retry records that are not due yet (and what follows them in their partition)."""
        assert self._consumer is not None  # noqa: S101
        if not self._retry_topics:
            return messages
        now_ms = _now_ms()
        held: set[TP] = set()
        ready = []
        for message in messages:
            tp = (message.topic() or "", message.partition() or 0)
            if tp in held:
                continue
            if tp[0] in self._retry_topics:
                due = headers.get_int(message_headers(message), headers.DUE_MS) or 0
                if due > now_ms:
                    self._gate.hold(self._consumer, tp[0], tp[1], message.offset() or 0, due)
                    self._seeked.add(tp)
                    held.add(tp)
                    continue
            ready.append(message)
        return ready

    def _handle_one(self, message: Message) -> None:
        """Decode, call the handler, write its outputs; route any failure. Never skips."""
        if self._ordering is not None and self._park_behind_head(message):
            return
        try:
            record = self.codecs.decode(message)
        except SerializationError as error:
            self._route(message, error)
            return
        try:
            outputs = normalize_outputs(self.spec.handler(record))
        except Exception as error:  # noqa: BLE001 - every handler failure is routed, none lost
            self._route(message, error)
            return
        self._write(message, record, outputs)

    def _process_async(self, messages: list[Message]) -> None:
        decoded: list[tuple[Message, Record[Any]]] = []
        failed: dict[int, SerializationError] = {}
        for index, message in enumerate(messages):
            try:
                decoded.append((message, self.codecs.decode(message)))
            except SerializationError as error:
                failed[index] = error
        results = iter(asyncio.run(self._gather([record for _, record in decoded])))
        pairs = iter(decoded)
        for index, message in enumerate(messages):  # input order, whatever finished first
            if index in failed:
                self._route(message, failed[index])
                continue
            _, record = next(pairs)
            result = next(results)
            if isinstance(result, Exception):
                self._route(message, result)
            elif isinstance(result, BaseException):
                raise result
            else:
                self._write(message, record, normalize_outputs(result))

    async def _gather(self, records: list[Record[Any]]) -> list[object]:
        limit = asyncio.Semaphore(self.spec.concurrency)
        handler: Callable[[Record[Any]], Awaitable[object]] = self.spec.handler

        async def one(record: Record[Any]) -> object:
            async with limit:
                return await handler(record)

        return await asyncio.gather(*(one(r) for r in records), return_exceptions=True)

    def _write(self, message: Message, record: Record[Any], outputs: list[Output]) -> None:
        """Encode every output first, then produce them all; a failure routes the record."""
        origin = (record.topic, record.partition, record.offset)
        rejected = self._rejected.get(origin)
        if rejected is not None:
            # the broker refused an output of this record in an aborted transaction
            self._route(message, OutputRejectedError(rejected))
            return
        try:
            encoded = [self.codecs.encode(output, record) for output in outputs]
        except Exception as error:  # noqa: BLE001 - a bad output is the record's failure
            self._route(message, error)
            return
        for topic, value, key, _headers in encoded:
            size = len(value or b"") + len(key or b"")
            if size > self.settings.max_message_bytes:
                self._route(
                    message,
                    OutputRejectedError(
                        f"output to {topic} is {size} bytes, over the limit of "
                        f"{self.settings.max_message_bytes}"
                    ),
                )
                return
        self._ensure_open()
        for topic, value, key, output_headers in encoded:
            self._produce(topic, value, key, output_headers, origin)
            self.stats.produced += 1
        self._processed(message)
        if self._ordering is not None and message.topic() in self._retry_topics:
            self._settle(message, None)  # only a record read back from retry can be waiting

    def _route(self, message: Message, error: BaseException) -> None:
        """Send the record, untouched, to its retry tier or the DLQ, in the open transaction."""
        original = message_headers(message)
        attempts = (headers.get_int(original, headers.ATTEMPT) or 0) + 1
        now_ms = _now_ms()
        decision = self.spec.retry.decide(
            self.spec.group_id, error, attempts_so_far=attempts, now_ms=now_ms
        )
        reason = "output-rejected" if isinstance(error, OutputRejectedError) else decision.reason
        routed = _carried_headers(message, original)
        first_failure = headers.get_int(original, headers.FIRST_FAILURE_MS) or now_ms
        routed += [
            (headers.STAGE, self.spec.group_id.encode()),
            (headers.ATTEMPT, str(attempts).encode()),
            (headers.FIRST_FAILURE_MS, str(first_failure).encode()),
        ]
        if decision.due_ms is not None:
            routed.append((headers.DUE_MS, str(decision.due_ms).encode()))
        to_retry = decision.due_ms is not None
        routed += headers.error_headers(
            error, "retry" if to_retry else reason, with_stack=not to_retry
        )
        self._ensure_open()
        origin = (message.topic() or "", message.partition() or 0, message.offset() or 0)
        partition = None
        if self._ordering is not None:
            order = self._settle(message, decision)
            # a key's retry records go to the partition numbered like its input partition
            partition = None if order is None or decision.due_ms is None else order[0][1]
        self._produce(
            decision.topic, message.value(), message.key(), routed, origin, partition=partition
        )
        if decision.due_ms is None:
            self.stats.dead_lettered += 1
            log.warning(
                "record dead-lettered",
                extra={
                    "record": f"{origin[0]}/{origin[1]}@{origin[2]}",
                    "reason": reason,
                    "error": f"{type(error).__name__}: {error}"[:300],
                    "dlq": decision.topic,
                },
            )
        else:
            self.stats.retried += 1
        self._processed(message)

    # -- key-ordered retries (streams/ordering.py) -----------------------------------------

    @staticmethod
    def _order_of(message: Message) -> tuple[OrderKey, int] | None:
        """(original topic, partition, key) and original offset; None for a record without key."""
        key = message.key()
        if key is None:
            return None
        found = message_headers(message)
        if found:  # a record read back from a retry topic names where it entered
            topic = headers.get(found, headers.ORIGINAL_TOPIC)
            partition = headers.get_int(found, headers.ORIGINAL_PARTITION)
            offset = headers.get_int(found, headers.ORIGINAL_OFFSET)
            if topic is not None and partition is not None and offset is not None:
                return (topic.decode(), partition, bytes(key)), offset
        return (message.topic() or "", message.partition() or 0, bytes(key)), message.offset() or 0

    def _settle(
        self, message: Message, decision: RetryDecision | None
    ) -> tuple[OrderKey, int] | None:
        """Note in the ledger where ``message`` went: done (None or the DLQ) or a retry tier."""
        assert self._ordering is not None  # noqa: S101
        order = self._order_of(message)
        if order is None:
            return None
        key, offset = order
        if decision is None or decision.due_ms is None:
            self._ordering.done(key, offset)
        else:
            self._ordering.wait(key, Waiting(offset, decision.topic, decision.due_ms))
        return order

    def _park_behind_head(self, message: Message) -> bool:
        """Park ``message`` behind an earlier record of its key that waits in retry; True if so.

        The record goes, untouched, to the retry topic and partition where that record waits,
        due when it is: it is read again right after it, and processed once it is the head.
        """
        assert self._ordering is not None  # noqa: S101
        if not self._ordering:
            return False  # nothing waits: the common case
        order = self._order_of(message)
        if order is None or self._ordering.is_head(*order):
            return False
        key, offset = order
        head = self._ordering.head(key)
        assert head is not None  # noqa: S101 - is_head() said an earlier record waits
        original = message_headers(message)
        routed = _carried_headers(message, original)
        for name in (headers.ATTEMPT, headers.FIRST_FAILURE_MS):  # parking is no attempt
            kept = headers.get(original, name)
            if kept is not None:
                routed.append((name, kept))
        routed += [
            (headers.STAGE, self.spec.group_id.encode()),
            (headers.DUE_MS, str(head.due_ms).encode()),
            (headers.PARKED_BEHIND, f"{key[0]}/{key[1]}@{head.original_offset}".encode()),
        ]
        self._ensure_open()
        origin = (message.topic() or "", message.partition() or 0, message.offset() or 0)
        self._produce(head.topic, message.value(), message.key(), routed, origin, partition=key[1])
        self._ordering.wait(key, Waiting(offset, head.topic, head.due_ms))
        self.stats.parked += 1
        self._processed(message)
        return True

    def _rebuild_ledger(self, partitions: list[TopicPartition]) -> None:
        """Refill the ledger from the retry topics: committed offset to end, per partition."""
        assert self._ordering is not None  # noqa: S101
        assert self._consumer is not None  # noqa: S101
        self._ordering.clear()
        retry = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        retry = [tp for tp in retry if tp.topic in self._retry_topics]
        if not retry:
            return
        committed = self._consumer.committed(retry, timeout=30)
        reader = Consumer(
            {
                **self.kafka.client_config(),
                "group.id": f"{self.spec.group_id}.ledger",  # never joined, never committed
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            }
        )
        try:
            starts = [TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)) for tp in committed]
            remaining = set()
            for tp in starts:
                _low, high = reader.get_watermark_offsets(tp, timeout=30)
                if high > tp.offset:
                    remaining.add((tp.topic, tp.partition))
            reader.assign(starts)
            deadline = time.monotonic() + 60
            while remaining:
                if time.monotonic() > deadline:
                    raise KafkaClientError(
                        f"stage {self.spec.group_id}: could not read the retry topics to the "
                        f"end within 60 s (left: {sorted(remaining)})",
                        hint="check the broker; the worker restarts and tries again",
                    )
                for found in reader.consume(num_messages=500, timeout=1.0):
                    where = (found.topic() or "", found.partition() or 0)
                    error = found.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
                            remaining.discard(where)
                        continue
                    order = self._order_of(found)
                    due = headers.get_int(message_headers(found), headers.DUE_MS) or 0
                    if order is not None:
                        self._ordering.wait(order[0], Waiting(order[1], where[0], due))
        finally:
            reader.close()
        log.info("key-ordered retries: %d records wait in retry topics", len(self._ordering))

    def _produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        output_headers: list[tuple[str, bytes]],
        origin: tuple[str, int, int],
        *,
        partition: int | None = None,
    ) -> None:
        assert self._txn is not None  # noqa: S101
        try:
            self._txn.produce(topic, value, key, output_headers, origin=origin, partition=partition)
        except TransactionError as error:
            self._recover(error)
            raise _BatchAbandoned from error

    def _processed(self, message: Message) -> None:
        self._next_offset[(message.topic() or "", message.partition() or 0)] = (
            message.offset() or 0
        ) + 1
        self._in_txn += 1
        self.stats.consumed += 1

    def _ensure_open(self) -> None:
        assert self._txn is not None  # noqa: S101
        if not self._txn.is_open:
            self._begin()

    def _begin(self) -> None:
        assert self._txn is not None  # noqa: S101
        try:
            self._txn.begin()
        except TransactionError as error:
            # a fatal error surfaced since the last commit (a fenced delivery, say)
            self._recover(error)
            raise _BatchAbandoned from error

    # -- commit and recovery ---------------------------------------------------------------

    def _offsets(self, *, between_batches: bool) -> dict[TP, int]:
        """Next offsets to commit; past trailing transaction markers where that is safe."""
        assert self._consumer is not None  # noqa: S101
        offsets = dict(self._next_offset)
        if between_batches:
            # Only between batches has everything handed to us been processed; then position()
            # differs from our own count only by control markers and aborted records, and
            # committing it avoids a permanent lag behind them (librdkafka#3917), also on
            # partitions that held nothing but those. Mid-batch (a rebalance inside
            # consume()) position() is past unprocessed records.
            positions = self._consumer.position(self._consumer.assignment())
            for tp in positions:
                key = (tp.topic, tp.partition)
                if key in self._seeked or tp.error is not None or tp.offset < 0:
                    continue  # position() after a seek says nothing about markers
                if tp.offset > max(offsets.get(key, -1), self._committed_at.get(key, -1)):
                    offsets[key] = tp.offset
        return offsets

    def _commit_markers_only(self) -> None:
        """Idle: commit positions that moved past markers alone (no records to process)."""
        assert self._txn is not None  # noqa: S101
        if self._txn.is_open or self._gate.held:
            return
        if time.monotonic() - self._idle_checked < _IDLE_COMMIT_INTERVAL_S:
            return
        self._idle_checked = time.monotonic()
        if self._offsets(between_batches=True):
            self._ensure_open()
            self._commit(between_batches=True)

    def _maybe_commit(self, *, force: bool) -> None:
        assert self._txn is not None  # noqa: S101
        if not self._txn.is_open:
            if not force:
                self._commit_markers_only()
            return
        due = (
            force
            or self._in_txn >= self.settings.batch_max_records
            or self._txn.age_s * 1000 >= self.settings.batch_max_ms
        )
        if due:
            self._commit(between_batches=True)

    def _commit(self, *, between_batches: bool = False) -> bool:
        """Commit the open transaction; on failure recover (abort/reset + rewind). True if done."""
        assert self._txn is not None  # noqa: S101
        assert self._consumer is not None  # noqa: S101
        offsets = self._offsets(between_batches=between_batches)
        try:
            self._txn.commit(offsets, self._consumer.consumer_group_metadata())
        except TransactionError as error:
            self._recover(error)
            return False
        self.stats.transactions_committed += 1
        self._committed_at.update(offsets)
        self._next_offset.clear()
        self._seeked.clear()
        self._rejected.clear()
        self._in_txn = 0
        return True

    def _recover(self, error: TransactionError) -> None:
        assert self._txn is not None  # noqa: S101
        age_ms = self._txn.age_s * 1000
        if self._txn.is_open or error.requires_abort:
            self.stats.transactions_aborted += 1
        if error.requires_abort and not error.fatal:
            log.warning("transaction aborted, rewinding: %s", error)
            try:
                self._txn.abort()
            except TransactionError:
                self._reset_producer(error)
        else:
            if error.code in {"_FENCED", "PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH"}:
                # Fenced by a twin (another live worker on this slot: stop, it carries on), or
                # by an epoch bump without one (a broker restart, our own timed-out
                # transaction: recreate the producer). The group says which: a twin is a
                # member with our client.id and another member id.
                if self._twin_alive():
                    raise FencedError(
                        f"stage {self.spec.group_id} slot {self.slot}: fenced by another worker "
                        f"with transactional.id {self._txn.transactional_id}; stopping without "
                        "committing (its records are processed by the newer worker)"
                    ) from error
                log.warning(
                    "producer fenced (transaction age %.0f ms) and no other worker runs this "
                    "slot: a broker restart or a timed-out transaction; recreating it",
                    age_ms,
                )
            self._reset_producer(error)
        self._rewind()

    def _twin_alive(self) -> bool:
        """True if another member of the group has this worker's client.id (the same slot).

        Asked for up to _TWIN_WAIT_S: a twin fences us at its init_transactions(), a moment
        before its consumer joins the group.
        """
        assert self._consumer is not None  # noqa: S101
        client_id = f"{self.spec.group_id}.{self.slot}"
        me = self._consumer.memberid()
        admin = AdminClient(self.kafka.client_config())
        deadline = time.monotonic() + _TWIN_WAIT_S
        while True:
            try:
                futures = admin.describe_consumer_groups([self.spec.group_id], request_timeout=5)
                description = futures[self.spec.group_id].result(timeout=10)
                if any(m.client_id == client_id and m.member_id != me for m in description.members):
                    return True
            except KafkaException:
                log.debug("describe_consumer_groups failed; asking again", exc_info=True)
            if time.monotonic() > deadline:
                return False
            time.sleep(1.0)

    def _reset_producer(self, error: StreamsError) -> None:
        assert self._txn is not None  # noqa: S101
        log.warning("recreating the transactional producer after: %s", error)
        self.stats.producer_resets += 1
        self._txn.reset()

    def _rewind(self, partitions: list[TopicPartition] | None = None) -> None:
        """Seek every assigned partition back to its committed offset."""
        assert self._consumer is not None  # noqa: S101
        self._rewind_pending = False
        self._next_offset.clear()
        self._seeked.clear()
        self._in_txn = 0
        targets = partitions if partitions is not None else self._consumer.assignment()
        if not targets:
            return
        self.stats.rewinds += 1
        committed = self._consumer.committed(targets, timeout=30)
        for tp in committed:
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            try:
                self._consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
            except KafkaException as error:
                # not fetching yet: it will start from the committed offset anyway
                log.debug("seek %s/%s skipped: %s", tp.topic, tp.partition, error)
        if self._ordering is not None:
            self._rebuild_ledger(self._consumer.assignment())

    def _abort_quietly(self) -> None:
        if self._txn is not None and self._txn.is_open:
            try:
                self._txn.abort()
            except TransactionError:
                log.warning("abort while stopping failed; the coordinator will time it out")

    # -- rebalance callbacks (run inside consume()) ------------------------------------------

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions assigned: %s", partition_names(partitions))
        if self._ordering is not None:
            self._rebuild_ledger(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions revoked: %s", partition_names(partitions))
        self._gate.forget(consumer, partitions)
        if self._txn is not None and self._txn.is_open:
            # everything handed to us so far has been processed: commit it while we still
            # own the partitions (with the current generation); a failure rewinds
            self._rewind_pending = not self._commit()
        for tp in partitions:
            self._next_offset.pop((tp.topic, tp.partition), None)
            self._committed_at.pop((tp.topic, tp.partition), None)
        if self._ordering is not None:
            self._ordering.drop_partitions({tp.partition for tp in partitions})

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning(
            "partitions lost: %s; aborting the open transaction", partition_names(partitions)
        )
        self._gate.forget(consumer, partitions)
        if self._txn is not None and self._txn.is_open:
            self.stats.transactions_aborted += 1
            try:
                self._txn.abort()
            except TransactionError as error:
                self._reset_producer(error)
            self._rewind_pending = True
        for tp in partitions:
            self._next_offset.pop((tp.topic, tp.partition), None)
            self._committed_at.pop((tp.topic, tp.partition), None)

    # -- end -------------------------------------------------------------------------------

    def _emit_stats(self) -> None:
        snapshot = {"stage": self.spec.group_id, "slot": self.slot, **self.stats.snapshot()}
        log.info("stage stats", extra={"stats": snapshot})
        if self._on_stats is not None:
            self._on_stats(snapshot)

    def _close(self) -> None:
        if self._txn is not None:
            self._txn.close()
        if self._consumer is not None:
            self._consumer.close()  # leaves the group: partitions move at once, not at timeout
        if self._registry is not None:
            self._registry.close()
