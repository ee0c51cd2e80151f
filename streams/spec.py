"""What a pipeline declares, and how each declaration is named on the cluster.

A pipeline is made of *components*, each a consumer group of its own:

- a **stage** (``StageSpec``) reads topics and writes topics, exactly once, with retry tiers
  and a dead-letter topic;
- a **sink** (``SinkSpec``) reads topics and writes rows to a SQL database, its offsets stored
  with the rows.

Both have the same shape: ``kind``, ``group_id``, ``inputs``, ``outputs``, ``retry_topics``,
``dlq_topic`` (None for a sink), ``subscriptions`` and ``lag_topics``, so that tools (lag, the
monitor, topic creation, replay) read one shape and never ask which kind they hold. Naming:

=======================  =========================================================
consumer group           ``P.S`` (pipeline ``P``, component ``S``)
consumer client.id       ``P.S.N`` for the worker in slot ``N``
transactional.id         ``P.S.N`` (stable across restarts, unique among live workers)
retry topics             ``P.S.retry.<delay>``, one per tier (``streams.retry``)
dead-letter topic        ``P.S.dlq``
=======================  =========================================================

This module holds declarations only: it imports no Kafka client and no runner.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from streams.codecs import Codec
from streams.record import Record
from streams.retry import RetryPolicy

if TYPE_CHECKING:
    from streams.database import SinkTransaction

__all__ = [
    "INTERNAL_TOPICS",
    "REPLAY_LEDGER_TOPIC",
    "STATS_TOPIC",
    "Component",
    "ComponentKind",
    "Handler",
    "SinkHandler",
    "SinkSpec",
    "StageSpec",
    "TopicSpec",
]

Handler = Callable[[Record[Any]], Any] | Callable[[Record[Any]], Awaitable[Any]]
SinkHandler = Callable[[Record[Any], "SinkTransaction"], None]
ComponentKind = Literal["stage", "sink"]


@dataclass(frozen=True)
class TopicSpec:
    """A topic as the pipeline needs it: name, partition count and topic-level config."""

    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)


# the compacted topic of worker counters (streams.runtime.publish writes, the monitor reads)
STATS_TOPIC = "_streams.stats"
# the compacted topic of replay tasks (redrives, copies, resets) and their progress, one record
# per task id (streams.replay.ledger): what was moved, what a second redrive must refuse
REPLAY_LEDGER_TOPIC = "_streams.replay"
# Topics every installation needs besides the pipelines' own; `topics create` makes them too.
INTERNAL_TOPICS = (
    TopicSpec(STATS_TOPIC, 1, {"cleanup.policy": "compact"}),
    # A running task writes its progress with every transaction: small segments, cleaned soon,
    # keep what a reader must read from the start (every command does) near one per task.
    TopicSpec(
        REPLAY_LEDGER_TOPIC,
        1,
        {
            "cleanup.policy": "compact",
            "segment.bytes": "1048576",
            "segment.ms": "600000",
            "min.cleanable.dirty.ratio": "0.1",
        },
    ),
)


class _Naming:
    """Names shared by every component kind (``pipeline`` and ``name`` are dataclass fields)."""

    pipeline: str
    name: str
    inputs: tuple[str, ...]

    @property
    def group_id(self) -> str:
        """``P.S``: the consumer group of every worker of this component."""
        return f"{self.pipeline}.{self.name}"

    def client_id(self, slot: int) -> str:
        """``P.S.N``: the consumer's client.id in slot ``N`` (lag tools show it per member)."""
        return f"{self.group_id}.{slot}"

    def transactional_id(self, slot: int) -> str:
        """Stable per worker slot, unique among live workers of this component."""
        return f"{self.group_id}.{slot}"


@dataclass(frozen=True)
class StageSpec(_Naming):
    """One stage: a consumer group reading ``inputs`` and writing ``outputs`` through a handler."""

    kind: ClassVar[Literal["stage"]] = "stage"

    pipeline: str
    name: str
    inputs: tuple[str, ...]
    input_codec: Codec
    key_codec: Codec
    outputs: Mapping[str, Codec]
    handler: Handler
    concurrency: int = 16
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @property
    def retry_topics(self) -> list[str]:
        """``P.S.retry.<delay>``, one per tier, read by this stage's own consumer group."""
        return self.retry.retry_topics(self.group_id)

    @property
    def dlq_topic(self) -> str:
        """``P.S.dlq``: records this stage gave up on, with their original bytes."""
        return self.retry.dlq_topic(self.group_id)

    @property
    def subscriptions(self) -> list[str]:
        """What the stage's consumer reads: its inputs, then its own retry topics."""
        return [*self.inputs, *self.retry_topics]

    @property
    def lag_topics(self) -> list[str]:
        """The topics whose partitions a lag view lists for this group, even before a commit."""
        return self.subscriptions

    @property
    def written_topics(self) -> list[str]:
        """Every topic a worker of this stage writes to: outputs, retry tiers, the DLQ."""
        return [*self.outputs, *self.retry_topics, self.dlq_topic]

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.handler)

    @property
    def default_output(self) -> str | None:
        """The output topic used when a handler does not name one (only with exactly one)."""
        return next(iter(self.outputs)) if len(self.outputs) == 1 else None


@dataclass(frozen=True)
class SinkSpec(_Naming):
    """One sink: a consumer group reading ``inputs`` and writing rows through a handler.

    A sink writes no topic: ``outputs`` and ``retry_topics`` are empty and ``dlq_topic`` is
    None. A record it cannot write stops it (see ``streams.sinks``).
    """

    kind: ClassVar[Literal["sink"]] = "sink"

    pipeline: str
    name: str
    inputs: tuple[str, ...]
    input_codec: Codec
    key_codec: Codec
    database: str  # a URL; STREAMS_SINK_DATABASE_URL overrides it at run time
    handler: SinkHandler
    setup_sql: tuple[str, ...] = ()  # CREATE TABLE IF NOT EXISTS ..., run at start-up

    @property
    def outputs(self) -> Mapping[str, Codec]:
        return {}

    @property
    def retry_topics(self) -> list[str]:
        return []

    @property
    def dlq_topic(self) -> str | None:
        return None

    @property
    def subscriptions(self) -> list[str]:
        return list(self.inputs)

    @property
    def lag_topics(self) -> list[str]:
        return self.subscriptions

    @property
    def written_topics(self) -> list[str]:
        return []


Component = StageSpec | SinkSpec
