"""An aggregate worker: its clients, its state folder, and the loop that drives its batches.

``AggregateRunner(spec, slot=N).run()`` checks the stage's topics (and that every one its state
is keyed by has the inputs' partition count), creates the transactional producer
(``transactional.id`` ``P.S.N``) and a ``read_committed`` consumer with the *range* assignor
(partition ``p`` of the inputs, of the retry topics and of the repartition topic go to one
worker, the one holding state partition ``p``), and runs ``streams.loop.WorkerLoop`` over an
``AggregateBatch``. Local stores live in ``$STREAMS_STATE_DIR/<P.S>/slot-<N>/``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaException

from streams.aggregate.batch import AggregateBatch
from streams.aggregate.restore import RestoreProgress, Restorer
from streams.aggregate.stats import AggregateStats
from streams.codecs import registry_for
from streams.config import KafkaSettings, StageSettings, StateSettings
from streams.exceptions import KafkaClientError, TopologyError
from streams.kafka.clients import transactional_producer_config, worker_consumer_config
from streams.kafka.limits import TopicLimits, read_topic_limits
from streams.kafka.transaction import Transaction
from streams.loop import WorkerLoop
from streams.spec import AggregateSpec
from streams.stage.guard import Rejections
from streams.stage.recovery import new_incarnation
from streams.stage.serdes import StageSerdes
from streams.stage.twins import refuse_live_twin

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

__all__ = ["AggregateRunner"]

log = logging.getLogger("streams.aggregate")

_TOPIC_WAIT_S = 5.0  # as the plain stage: topics just created may not be in the metadata yet


class AggregateRunner:
    """Runs one aggregate stage in this process until stopped. One instance = one slot."""

    def __init__(
        self,
        spec: AggregateSpec,
        *,
        slot: int = 0,
        kafka: KafkaSettings | None = None,
        settings: StageSettings | None = None,
        state: StateSettings | None = None,
        registry: SchemaRegistryClient | None = None,
        on_stats: Callable[[dict[str, Any]], None] | None = None,
        reference: str | None = None,
        take_over: bool = False,
    ) -> None:
        self.spec = spec
        self.slot = slot
        self.take_over = take_over  # start even if a live worker runs this slot
        self.reference = reference or f"MODULE:{spec.pipeline}"
        # one per worker process, in the consumer's client.id: how a fenced worker tells a
        # newer twin on its slot from its own memberships (streams.stage.recovery)
        self.incarnation = new_incarnation()
        self.kafka = kafka or KafkaSettings()
        self.settings = settings or StageSettings()
        self.state_settings = state or StateSettings()
        if registry is None:
            codecs = [spec.key_codec, spec.input_codec, *spec.outputs.values()]
            registry = registry_for(codecs, self.kafka.schema_registry_url)
        self._registry = registry
        self.serdes = StageSerdes(spec.as_stage(), registry)
        self.stats = AggregateStats()
        self.progress = RestoreProgress()
        self.loop = WorkerLoop(self.settings)
        self._on_stats = on_stats
        self._logged_consumed = -1
        self.batch: AggregateBatch | None = None

    @property
    def heartbeat(self) -> float:
        return self.loop.heartbeat

    @property
    def ready(self) -> bool:
        return self.loop.joined

    @property
    def state_dir(self) -> Any:
        return self.state_settings.dir / self.spec.group_id / f"slot-{self.slot}"

    def request_stop(self) -> None:
        self.loop.request_stop()

    def run(self, *, max_records: int | None = None, idle_timeout_s: float | None = None) -> None:
        """Consume and fold until ``request_stop`` (or the optional limits, for tests)."""
        consumer = Consumer(self._consumer_config())
        rejections = Rejections()
        try:
            _require_topics(consumer, self.spec, self.kafka, self.reference)
            limits = TopicLimits(
                read_topic_limits(self.kafka, self.spec.written_topics),
                cap=self.settings.max_message_bytes,
            )
            if not self.take_over:
                # before init_transactions(), which would fence a live twin (as a stage does)
                refuse_live_twin(
                    self.kafka,
                    group_id=self.spec.group_id,
                    client_id=self._consumer_config()["client.id"],
                    session_timeout_ms=self.settings.session_timeout_ms,
                )
            txn = Transaction(
                self._producer_config(limits),
                deadline_s=self.settings.transaction_deadline_s,
                on_rejected=rejections.add,
            )
        except BaseException:
            consumer.close()
            raise
        self.batch = self._batch(consumer, txn, rejections, limits)
        log.info(
            "aggregate started",
            extra={
                "stage": self.spec.group_id,
                "slot": self.slot,
                "transactional_id": txn.transactional_id,
                "changelog": self.spec.changelog_topic,
                "store": self.state_settings.store or self.spec.store,
                "state_dir": str(self.state_dir),
            },
        )
        try:
            self.loop.run(
                consumer,
                self.batch,
                topics=self.spec.subscriptions,
                emit_stats=self._emit_stats,
                max_records=max_records,
                idle_timeout_s=idle_timeout_s,
            )
        finally:
            if self._registry is not None:
                self._registry.close()

    def _batch(
        self, consumer: Consumer, txn: Transaction, rejections: Rejections, limits: TopicLimits
    ) -> AggregateBatch:
        restorer = Restorer(
            group_id=self.spec.group_id,
            changelog=self.spec.changelog_topic,
            kafka=self.kafka,
            store_kind=self.state_settings.store or self.spec.store,
            state_dir=self.state_dir,
            progress=self.progress,
            on_progress=self._emit_stats,
        )
        config = self._consumer_config()
        return AggregateBatch(
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
            restorer=restorer,
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
            assignor="range",
        )
        # range gives partition p of every subscribed topic to one worker: the one that holds
        # state partition p (all have the same partition count, checked at start-up); no
        # kafka_extra setting may change that
        config["partition.assignment.strategy"] = "range"
        return config

    def _emit_stats(self) -> None:
        stats, progress = self.stats, self.progress
        stats.restoring = int(progress.restoring)
        stats.restore_to_restore = progress.to_restore
        stats.restore_restored = progress.restored
        stats.restore_seconds_last = round(progress.seconds_last, 3)
        stats.restores_full = progress.full_restores
        stats.restores_from_checkpoint = progress.checkpoint_restores
        if self.batch is not None:
            stats.state_keys = sum(s.key_count() for s in self.batch.states.values())
        snapshot = stats.snapshot(group=self.spec.group_id, slot=self.slot)
        snapshot["changelog_topic"] = self.spec.changelog_topic
        moved = stats.consumed != self._logged_consumed or progress.restoring
        self._logged_consumed = stats.consumed
        log.log(logging.INFO if moved else logging.DEBUG, "stage stats", extra={"stats": snapshot})
        if self._on_stats is not None:
            self._on_stats(snapshot)


def _require_topics(
    consumer: Consumer, spec: AggregateSpec, kafka: KafkaSettings, reference: str
) -> None:
    """Fail at start-up, clearly, if a topic is missing or has the wrong partition count."""
    needed = [*spec.subscriptions, *spec.written_topics]
    deadline = time.monotonic() + _TOPIC_WAIT_S
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
        time.sleep(1)
    if missing:
        raise TopologyError(
            f"stage {spec.group_id}: missing topics {', '.join(sorted(set(missing)))}",
            hint=f"create them: streams topics create {reference} "
            "(the stage never creates topics by itself)",
        )
    keyed = [*spec.subscriptions, spec.changelog_topic]
    counts = {name: len(existing[name].partitions) for name in keyed}
    if len(set(counts.values())) > 1:
        raise TopologyError(
            f"stage {spec.group_id}: an aggregate's inputs, retry topics and changelog must "
            f"have the same number of partitions (its state is kept per partition), found "
            f"{counts}",
            hint="recreate the topics with one count (streams topics create makes them so)",
        )
