"""A stage worker: its clients, built when it starts, and the loop that drives its batches.

``StageRunner(spec, slot=N).run()`` checks the stage's topics, creates its transactional
producer (``transactional.id`` ``P.S.N``) and its ``read_committed`` consumer, and runs
``streams.loop.WorkerLoop`` over a ``TransactionBatch`` until ``request_stop()`` (SIGTERM).
What each failure leads to is in ``streams.stage.recovery``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaException

from streams.codecs import registry_for
from streams.config import KafkaSettings, StageSettings
from streams.exceptions import KafkaClientError, TopologyError
from streams.kafka.clients import transactional_producer_config, worker_consumer_config
from streams.kafka.limits import TopicLimits, read_topic_limits
from streams.kafka.transaction import Refusal, Transaction
from streams.loop import WorkerLoop
from streams.spec import StageSpec
from streams.stage.batch import TransactionBatch
from streams.stage.guard import Rejections
from streams.stage.recovery import new_incarnation
from streams.stage.serdes import StageSerdes
from streams.stats import StageStats

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

__all__ = ["StageRunner"]

log = logging.getLogger("streams.stage")

# Topics created a moment ago may not show in the metadata yet (seen on a broker that had just
# started); a stage waits this long for them, saying so, before it reports them missing. The
# metadata caught up within a second there; 20 s made a plain typo wait 20 s for its error.
_TOPIC_WAIT_S = 5.0


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
        reference: str | None = None,
    ) -> None:
        self.spec = spec
        # MODULE:PIPELINE as the worker was started with it, for hints that name a command
        self.reference = reference or f"MODULE:{spec.pipeline}"
        self.slot = slot
        # ends the consumer's client.id: tells this process's group memberships from a twin's
        self.incarnation = new_incarnation()
        self.kafka = kafka or KafkaSettings()
        self.settings = settings or StageSettings()
        if registry is None:
            codecs = [spec.key_codec, spec.input_codec, *spec.outputs.values()]
            registry = registry_for(codecs, self.kafka.schema_registry_url)
        self._registry = registry
        self.serdes = StageSerdes(spec, registry)  # fails here, at start-up, on a bad schema
        self.stats = StageStats()
        self.loop = WorkerLoop(self.settings)
        self._on_stats = on_stats
        self._logged_consumed = -1

    @property
    def heartbeat(self) -> float:
        """When the loop last turned (monotonic seconds); the worker's watchdog reads it."""
        return self.loop.heartbeat

    @property
    def ready(self) -> bool:
        """Joined its group (first assignment received) with its clients set up."""
        return self.loop.joined

    def request_stop(self) -> None:
        """Finish the batch in flight, commit, and return from ``run`` (SIGTERM calls this)."""
        self.loop.request_stop()

    def run(self, *, max_records: int | None = None, idle_timeout_s: float | None = None) -> None:
        """Consume and process until ``request_stop`` (or the optional limits, for tests)."""
        consumer = Consumer(self._consumer_config())
        rejections = Rejections()
        try:
            _require_topics(consumer, self.spec, self.kafka, self.reference)
            limits = TopicLimits(
                read_topic_limits(self.kafka, self.spec.written_topics),
                cap=self.settings.max_message_bytes,
            )
            txn = self._transaction(rejections.add, limits)
        except BaseException:
            consumer.close()
            raise
        batch = self._batch(consumer, txn, rejections, limits)
        log.info(
            "stage started",
            extra={
                "stage": self.spec.group_id,
                "slot": self.slot,
                "transactional_id": txn.transactional_id,
                "inputs": list(self.spec.inputs),
                "outputs": list(self.spec.outputs),
            },
        )
        try:
            self.loop.run(
                consumer,
                batch,
                topics=self.spec.subscriptions,
                emit_stats=self._emit_stats,
                max_records=max_records,
                idle_timeout_s=idle_timeout_s,
            )
        finally:
            if self._registry is not None:
                self._registry.close()

    # -- clients ---------------------------------------------------------------------------

    def _transaction(
        self, on_rejected: Callable[[Refusal], None], limits: TopicLimits
    ) -> Transaction:
        """The worker's transactional producer (init_transactions done): one per run."""
        return Transaction(
            self._producer_config(limits),
            deadline_s=self.settings.transaction_deadline_s,
            on_rejected=on_rejected,
        )

    def _batch(
        self, consumer: Consumer, txn: Transaction, rejections: Rejections, limits: TopicLimits
    ) -> TransactionBatch:
        config = self._consumer_config()
        return TransactionBatch(
            spec=self.spec,
            client_id=config["client.id"],
            eager="cooperative" not in str(config["partition.assignment.strategy"]),
            serdes=self.serdes,
            consumer=consumer,
            txn=txn,
            rejections=rejections,
            limits=limits,
            read_limits=lambda topics: read_topic_limits(self.kafka, topics),
            producer_config=self._producer_config,
            kafka=self.kafka,
            settings=self.settings,
            stats=self.stats,
        )

    def _producer_config(self, limits: TopicLimits) -> dict[str, Any]:
        return transactional_producer_config(
            self.kafka,
            self.settings,
            client_id=f"{self.spec.client_id(self.slot)}.producer",
            transactional_id=self.spec.transactional_id(self.slot),
            limits=limits,
        )

    def _consumer_config(self) -> dict[str, Any]:
        config = worker_consumer_config(
            self.kafka,
            self.settings,
            group_id=self.spec.group_id,
            client_id=self.spec.client_id(self.slot),
            incarnation=self.incarnation,
            # range spreads every topic of the stage on its own: the input's partitions and the
            # retry topics' within one of each other per worker, whatever the join order (a
            # cooperative-sticky count balance gave one worker every input partition)
            assignor="range",
        )
        if self.spec.retry.key_ordered:
            # range also gives partition p of every topic of the stage to one worker: the
            # worker that reads a key's input partition reads its retry partitions; no
            # kafka_extra setting may change that
            config["partition.assignment.strategy"] = "range"
        return config

    def _emit_stats(self) -> None:
        snapshot = self.stats.snapshot(group=self.spec.group_id, slot=self.slot)
        # at INFO only when something moved: an idle worker's log stays quiet
        moved = self.stats.consumed != self._logged_consumed
        self._logged_consumed = self.stats.consumed
        log.log(logging.INFO if moved else logging.DEBUG, "stage stats", extra={"stats": snapshot})
        if self._on_stats is not None:
            self._on_stats(snapshot)


def _require_topics(
    consumer: Consumer, spec: StageSpec, kafka: KafkaSettings, reference: str
) -> None:
    """Fail at start-up, clearly, if a topic of the stage does not exist."""
    needed = [*spec.subscriptions, *spec.outputs, spec.dlq_topic]
    deadline = time.monotonic() + _TOPIC_WAIT_S
    waiting = False
    while True:
        try:
            existing = consumer.list_topics(timeout=30).topics
        except KafkaException as error:
            raise KafkaClientError(
                f"stage {spec.group_id}: cannot reach Kafka at {kafka.bootstrap_servers}: {error}",
                hint="check STREAMS_BOOTSTRAP_SERVERS and that the broker runs",
            ) from error
        missing = [name for name in needed if name not in existing]
        if not missing or time.monotonic() > deadline:
            break
        if not waiting:
            waiting = True
            log.info(
                "waiting up to %.0f s for topics %s (not in the broker's metadata yet)",
                _TOPIC_WAIT_S,
                ", ".join(missing),
            )
        time.sleep(1)  # just created: the broker's metadata can lag behind for a moment
    if missing:
        raise TopologyError(
            f"stage {spec.group_id}: missing topics {', '.join(missing)} "
            f"at {kafka.bootstrap_servers}",
            hint=f"create them: streams topics create {reference} "
            "(the stage never creates topics by itself)",
        )
    if spec.retry.key_ordered:
        counts = {name: len(existing[name].partitions) for name in spec.subscriptions}
        if len(set(counts.values())) > 1:
            raise TopologyError(
                f"stage {spec.group_id}: key-ordered retries need its inputs and retry "
                f"topics to have the same number of partitions, found {counts}",
                hint="give the retry topics the inputs' partition count (Pipeline("
                "partitions=...)), or drop key_ordered",
            )
