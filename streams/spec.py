"""What a pipeline declares, and how each declaration is named on the cluster.

A pipeline is made of *components*, each a consumer group of its own:

- a **stage** (``StageSpec``) reads topics and writes topics, exactly once, with retry tiers
  and a dead-letter topic;
- a **sink** (``SinkSpec``) reads topics and writes rows to a SQL database, its offsets stored
  with the rows;
- an **aggregate** (``AggregateSpec``) folds records into per-key state, per window or not,
  its changelog ``P.S.changelog`` written in the stage's own transaction (``streams.aggregate``).

All have the same shape: ``kind``, ``group_id``, ``inputs``, ``outputs``, ``retry_topics``,
``dlq_topic`` (None for a sink), ``subscriptions``, ``lag_topics`` and ``state_topics``, so
that tools (lag, the monitor, topic creation, replay) read one shape and never ask which kind
they hold. Naming:

=======================  =========================================================
consumer group           ``P.S`` (pipeline ``P``, component ``S``)
consumer client.id       ``P.S.N`` for the worker in slot ``N``
transactional.id         ``P.S.N`` (stable across restarts, unique among live workers)
retry topics             ``P.S.retry.<delay>``, one per tier (``streams.retry``)
dead-letter topic        ``P.S.dlq``
state changelog          ``P.S.changelog`` (aggregates: compacted, the inputs' partitions)
repartition topic        ``P.S.repartition`` (aggregates with a ``key`` function)
=======================  =========================================================

This module holds declarations only: it imports no Kafka client and no runner.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel

from streams.codecs import Codec, raw
from streams.record import Record
from streams.retry import RetryPolicy
from streams.windows import Window, WindowSpec

if TYPE_CHECKING:
    from streams.database import SinkTransaction

__all__ = [
    "INTERNAL_TOPICS",
    "REPLAY_LEDGER_TOPIC",
    "STATS_TOPIC",
    "AggregateSpec",
    "Component",
    "ComponentKind",
    "FaustSpec",
    "Handler",
    "SinkHandler",
    "SinkSpec",
    "StageSpec",
    "TopicSpec",
]

Handler = Callable[[Record[Any]], Any] | Callable[[Record[Any]], Awaitable[Any]]
SinkHandler = Callable[[Record[Any], "SinkTransaction"], None]
ComponentKind = Literal["stage", "sink", "aggregate", "faust"]


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
    def state_topics(self) -> list[str]:
        """Topics holding this component's state (an aggregate's changelog; none here)."""
        return []

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
    def state_topics(self) -> list[str]:
        return []

    @property
    def written_topics(self) -> list[str]:
        return []


def _never_called(record: Record[Any]) -> None:
    raise AssertionError(f"an aggregate has no handler (record {record.coordinates})")


@dataclass(frozen=True)
class AggregateSpec(_Naming):
    """A stateful stage: folds each record into its key's value, per window or not.

    Built by ``Pipeline.aggregate``, which checks it; the runtime is ``streams.aggregate``.
    ``fold(value, record)`` returns the key's new value; ``result(key, window, value)`` the
    output record's value (None: ``{"key", "start_ms", "end_ms", "value"}``).
    """

    kind: ClassVar[Literal["aggregate"]] = "aggregate"

    pipeline: str
    name: str
    inputs: tuple[str, ...]
    input_codec: Codec
    key_codec: Codec
    outputs: Mapping[str, Codec]
    fold: Callable[[Any, Record[Any]], Any]
    initial: Callable[[], Any]
    partitions: int  # of every input, retry topic and the changelog
    window: WindowSpec | None = None
    emit: Literal["final", "update"] = "final"
    late: Literal["dlq", "drop"] = "dlq"
    result: Callable[[Any, Window, Any], Any] | None = None
    event_time: Callable[[Any], Any] | None = None
    key: Callable[[Record[Any]], Any] | None = None
    state_model: type[BaseModel] | None = None
    store: Literal["memory", "rocksdb", "sqlite"] = "rocksdb"
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @property
    def changelog_topic(self) -> str:
        """``P.S.changelog``: every state change, compacted, one partition per input partition."""
        return f"{self.group_id}.changelog"

    @property
    def repartition_topic(self) -> str | None:
        """``P.S.repartition`` when a ``key`` function re-keys the input, else None."""
        return f"{self.group_id}.repartition" if self.key is not None else None

    @property
    def retry_topics(self) -> list[str]:
        return self.retry.retry_topics(self.group_id)

    @property
    def dlq_topic(self) -> str:
        return self.retry.dlq_topic(self.group_id)

    @property
    def fold_topics(self) -> list[str]:
        """The topics whose records are folded (the others are re-keyed first)."""
        first = [self.repartition_topic] if self.repartition_topic else list(self.inputs)
        return [*first, *self.retry_topics]

    @property
    def subscriptions(self) -> list[str]:
        repartition = [self.repartition_topic] if self.repartition_topic else []
        return [*self.inputs, *repartition, *self.retry_topics]

    @property
    def lag_topics(self) -> list[str]:
        return self.subscriptions

    @property
    def state_topics(self) -> list[str]:
        """Topics that hold this stage's state (the lag view shows their size, not a lag)."""
        return [self.changelog_topic]

    @property
    def written_topics(self) -> list[str]:
        repartition = [self.repartition_topic] if self.repartition_topic else []
        return [
            *self.outputs,
            *repartition,
            self.changelog_topic,
            *self.retry_topics,
            self.dlq_topic,
        ]

    def as_stage(self) -> StageSpec:
        """The plain stage this one routes failures and encodes outputs like."""
        return StageSpec(
            pipeline=self.pipeline,
            name=self.name,
            inputs=self.inputs,
            input_codec=self.input_codec,
            key_codec=self.key_codec,
            outputs=self.outputs,
            handler=_never_called,
            retry=self.retry,
        )


@dataclass(frozen=True)
class FaustSpec(_Naming):
    """A faust agent run as a stage (``streams.agents``): group ``P.S``, our topic names, our DLQ.

    faust has no delayed retries, so an event whose processing raises goes straight to
    ``P.S.dlq`` (raw bytes, ``streams.*`` headers), inside the transaction of its source
    partition. Built by ``Pipeline.faust_stage`` from the app and the agent.
    """

    kind: ClassVar[Literal["faust"]] = "faust"

    pipeline: str
    name: str
    inputs: tuple[str, ...]
    outputs: Mapping[str, Codec]
    app: Any
    agent: Any
    changelogs: tuple[TopicSpec, ...] = ()
    partitions: int = 1

    @property
    def retry(self) -> RetryPolicy:
        """No tiers: every failure is dead-lettered (reason from the error, as for a stage)."""
        return RetryPolicy(tiers=(), max_attempts=1)

    @property
    def retry_topics(self) -> list[str]:
        return []

    @property
    def dlq_topic(self) -> str:
        return RetryPolicy.dlq_topic(self.group_id)

    @property
    def input_codec(self) -> Codec:
        """Raw bytes: faust decodes its own events; its DLQ records keep the bytes it read."""
        return raw()

    @property
    def key_codec(self) -> Codec:
        return raw()

    @property
    def leader_topic(self) -> str:
        """faust's assignor topic, ``<app id>-__assignor-__leader``."""
        return f"{self.group_id}-__assignor-__leader"

    @property
    def subscriptions(self) -> list[str]:
        return list(self.inputs)

    @property
    def lag_topics(self) -> list[str]:
        return self.subscriptions

    @property
    def state_topics(self) -> list[str]:
        return [topic.name for topic in self.changelogs]

    @property
    def own_topics(self) -> list[TopicSpec]:
        """The topics faust would create itself, declared here so ``topics create`` makes them."""
        return [
            *self.changelogs,
            TopicSpec(self.leader_topic, 1),
            TopicSpec(self.dlq_topic, self.partitions),
        ]

    @property
    def written_topics(self) -> list[str]:
        return [*self.outputs, self.dlq_topic, *self.state_topics, self.leader_topic]


def faust_spec(
    pipeline: str, name: str, app: Any, agent: Any, outputs: tuple[str, ...]
) -> FaustSpec:
    """The spec of a faust stage, from the app and agent objects (no faust import needed)."""
    from streams.codecs import raw  # noqa: PLC0415 - codecs import nothing of ours back
    from streams.exceptions import TopologyError  # noqa: PLC0415

    group = f"{pipeline}.{name}"
    app_id = getattr(getattr(app, "conf", None), "id", None)
    if app_id != group:
        raise TopologyError(
            f"faust stage {name!r}: the app's id is {app_id!r}, not the stage's group {group!r}",
            hint=f"create the app as faust.App({group!r}, ...): its id is the consumer group",
        )
    inputs = tuple(getattr(getattr(agent, "channel", None), "topics", ()) or ())
    if not inputs:
        raise TopologyError(f"faust stage {name!r}: the agent reads no topic")
    default = int(getattr(app.conf, "topic_partitions", 1) or 1)
    changelogs = tuple(
        TopicSpec(
            table.changelog_topic.get_topic_name(),
            int(table.partitions or default),
            {"cleanup.policy": "compact"},
        )
        for table in app.tables.values()
    )
    return FaustSpec(
        pipeline=pipeline,
        name=name,
        inputs=inputs,
        outputs=dict.fromkeys(outputs, raw()),
        app=app,
        agent=agent,
        changelogs=changelogs,
        partitions=default,
    )


Component = StageSpec | SinkSpec | AggregateSpec | FaustSpec
