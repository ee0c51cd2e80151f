"""The topics of a cluster: create a pipeline's, list, describe (with each one's role in a
pipeline) and delete them.

Every call takes the connection settings (``KafkaSettings``) and raises a one-line
``KafkaClientError`` with a hint when the brokers do not answer, or ``UnknownTopicError`` for a
topic the cluster does not have.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import (
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource  # the public re-export is untyped
from confluent_kafka.admin._listoffsets import OffsetSpec  # the same
from confluent_kafka.cimpl import NewTopic

from streams.config import KafkaSettings
from streams.exceptions import KafkaClientError, UnknownTopicError
from streams.pipeline import INTERNAL_TOPICS, REPLAY_LEDGER_TOPIC, STATS_TOPIC, Pipeline, TopicSpec

__all__ = [
    "PartitionDetail",
    "TopicDetail",
    "TopicReport",
    "TopicRole",
    "TopicSummary",
    "delete_topics",
    "describe_topics",
    "ensure_topics",
    "list_topics",
    "topic_roles",
    "with_durability",
]

_TIMEOUT_S = 30
_BROKER_DEFAULT = -1
_MIN_ISR = "min.insync.replicas"
# The first request: a broker that has not answered in 10 s is not there (the command says so
# at once rather than after half a minute).
_REACH_TIMEOUT_S = 10


@dataclass
class TopicReport:
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    differences: dict[str, list[str]] = field(default_factory=dict)
    # internal topics (worker stats) that were created by this call
    internal_created: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences


def ensure_topics(
    pipeline: Pipeline,
    *,
    kafka: KafkaSettings | None = None,
    replication_factor: int | None = None,
    min_insync_replicas: int | None = None,
) -> TopicReport:
    """Create missing topics; compare partitions and config of existing ones. Idempotent.

    ``replication_factor`` None leaves it to the broker (``default.replication.factor``);
    ``min_insync_replicas`` is set on every topic it creates (None: the broker's
    ``min.insync.replicas``) and compared on existing ones like any declared config. A
    replication factor above the cluster's broker count is refused before anything is created.

    Differences are reported, never changed silently: fewer partitions cannot be undone and
    more partitions move keys between partitions, so that is an operator's decision.
    """
    settings = kafka or KafkaSettings()
    admin = AdminClient(settings.client_config())
    specs = with_durability(pipeline.topic_specs(), min_insync_replicas)
    existing = _existing(admin, settings)
    if replication_factor is not None:
        _check_replication(admin, settings, replication_factor)
    report = TopicReport()
    internal = [
        spec
        for spec in with_durability(list(INTERNAL_TOPICS), min_insync_replicas)
        if spec.name not in existing
    ]
    if internal:
        internal_report = TopicReport()
        _create(admin, internal, replication_factor, internal_report)
        report.internal_created = internal_report.created
    missing = [spec for spec in specs if spec.name not in existing]
    raced = _create(admin, missing, replication_factor, report) if missing else set()
    counts = {name: len(meta.partitions) for name, meta in existing.items()}
    if raced:
        counts.update(_partition_counts(admin, raced))
    for spec in specs:
        if spec.name in counts and spec.name not in report.created:
            problems = _compare(admin, spec, counts[spec.name])
            if problems:
                report.differences[spec.name] = problems
            else:
                report.unchanged.append(spec.name)
    return report


def _partition_counts(admin: AdminClient, raced: set[str]) -> dict[str, int]:
    """The partition counts of topics another client created meanwhile, asked for by name.

    Right after the race (or while a topic of that name is still being deleted) the broker
    can answer UNKNOWN_TOPIC_OR_PART for a topic whose creation it just refused as existing:
    asked again for up to 15 s.
    """
    deadline = time.monotonic() + 15
    while True:
        counts: dict[str, int] = {}
        try:
            described = admin.describe_topics(TopicCollection(sorted(raced)))
            for name, future in described.items():
                counts[name] = len(future.result(timeout=_TIMEOUT_S).partitions)
        except KafkaException as error:
            reason = error.args[0] if error.args else None
            unknown = (
                isinstance(reason, KafkaError) and reason.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            )
            if not unknown or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
            continue
        return counts


def _create(
    admin: AdminClient,
    missing: list[TopicSpec],
    replication_factor: int | None,
    report: TopicReport,
) -> set[str]:
    """Create the missing topics; returns those someone else created since the listing."""
    # -1: the broker's default.replication.factor (CreateTopics v4+, Kafka 2.4+)
    factor = _BROKER_DEFAULT if replication_factor is None else replication_factor
    futures = admin.create_topics(
        [
            NewTopic(
                spec.name,
                num_partitions=spec.partitions,
                replication_factor=factor,
                config=dict(spec.config),
            )
            for spec in missing
        ],
        operation_timeout=_TIMEOUT_S,
    )
    raced: set[str] = set()
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as error:
            if "TOPIC_ALREADY_EXISTS" not in str(error):
                raise KafkaClientError(f"cannot create topic {name}: {error}") from error
            raced.add(name)
            continue
        report.created.append(name)
    return raced


def with_durability(specs: list[TopicSpec], min_insync_replicas: int | None) -> list[TopicSpec]:
    """``specs`` with ``min.insync.replicas`` added to their config when one is given."""
    if min_insync_replicas is None:
        return specs
    value = str(min_insync_replicas)
    return [
        TopicSpec(spec.name, spec.partitions, {**spec.config, _MIN_ISR: value}) for spec in specs
    ]


def _check_replication(admin: AdminClient, settings: KafkaSettings, factor: int) -> None:
    """Refuse a replication factor the cluster cannot place, before creating any topic."""
    brokers = len(admin.list_topics(timeout=_REACH_TIMEOUT_S).brokers)
    if factor > brokers:
        raise KafkaClientError(
            f"replication factor {factor} is above the {brokers} broker(s) of the cluster at "
            f"{settings.bootstrap_servers}; no topic was created",
            hint=f"give --replication-factor {brokers} or less, or add brokers",
        )


def _compare(admin: AdminClient, spec: TopicSpec, partitions: int) -> list[str]:
    problems = []
    if partitions != spec.partitions:
        problems.append(f"partitions: declared {spec.partitions}, topic has {partitions}")
    if spec.config:
        resource = ConfigResource("TOPIC", spec.name)
        described = admin.describe_configs([resource])[resource].result(timeout=_TIMEOUT_S)
        for key, wanted in sorted(spec.config.items()):
            entry = described.get(key)
            actual = None if entry is None else entry.value
            if actual != str(wanted):
                problems.append(f"{key}: declared {wanted}, topic has {actual}")
    return problems


def _existing(admin: AdminClient, settings: KafkaSettings) -> dict[str, Any]:
    """The cluster's topics (name -> metadata); a clear error if no broker answers."""
    try:
        return dict(admin.list_topics(timeout=_REACH_TIMEOUT_S).topics)
    except KafkaException as error:
        raise KafkaClientError(
            f"cannot reach Kafka at {settings.bootstrap_servers} "
            f"(no answer in {_REACH_TIMEOUT_S} s: {_reason(error)})",
            hint=settings.reach_hint,
        ) from error


def _reason(error: KafkaException) -> str:
    """librdkafka's own words for an error, without the KafkaError{...} wrapping."""
    kafka_error = error.args[0] if error.args else None
    if isinstance(kafka_error, KafkaError):
        return str(kafka_error.str())
    return str(error)


# --- roles, list, describe, delete ----------------------------------------------------------

RoleKind = Literal["input", "output", "retry", "dlq", "internal"]

# what each internal topic holds, as `topics create` and `topics list` say it
INTERNAL_PURPOSE = {
    STATS_TOPIC: "worker stats for `streams monitor`",
    REPLAY_LEDGER_TOPIC: "the replay ledger of `streams dlq` and `streams replay`",
}


@dataclass(frozen=True)
class TopicRole:
    """What a topic is to a pipeline: the input, output, a retry tier or the DLQ of a stage."""

    role: RoleKind
    component: str | None = None  # the stage or sink name; internal topics: what they hold
    tier: str | None = None  # retry topics: the delay tier, e.g. "30s"
    sink: bool = False

    def describe(self) -> str:
        if self.role == "internal":
            return f"internal ({self.component or 'framework state'})"
        of = f"{'sink' if self.sink else 'stage'} {self.component}"
        if self.role == "retry":
            return f"retry tier {self.tier} of {of}"
        if self.role == "dlq":
            return f"DLQ of {of}"
        return f"{self.role} of {of}"

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"role": self.role}
        if self.role == "internal":
            found["holds"] = self.component
        elif self.component is not None:
            found["sink" if self.sink else "stage"] = self.component
        if self.tier is not None:
            found["tier"] = self.tier
        return found


def topic_roles(pipeline: Pipeline) -> dict[str, list[TopicRole]]:
    """Every topic of ``pipeline`` (and the internal ones) with its roles, in declaration order."""
    roles: dict[str, list[TopicRole]] = {}
    for component in pipeline.stages:
        is_sink = component.kind == "sink"
        for topic in component.inputs:
            roles.setdefault(topic, []).append(TopicRole("input", component.name, sink=is_sink))
        for topic in component.outputs:
            roles.setdefault(topic, []).append(TopicRole("output", component.name))
        prefix = f"{component.group_id}.retry."
        for topic in component.retry_topics:
            tier = topic.removeprefix(prefix)
            roles.setdefault(topic, []).append(TopicRole("retry", component.name, tier=tier))
        if component.dlq_topic is not None:
            roles.setdefault(component.dlq_topic, []).append(TopicRole("dlq", component.name))
    for spec in INTERNAL_TOPICS:
        purpose = INTERNAL_PURPOSE.get(spec.name)
        roles.setdefault(spec.name, []).append(TopicRole("internal", purpose))
    return roles


@dataclass(frozen=True)
class TopicSummary:
    """One line of `streams topics list`: a topic, its partition count, its roles."""

    name: str
    partitions: int | None  # None: the pipeline declares it but the cluster does not have it
    roles: tuple[TopicRole, ...] = ()

    @property
    def exists(self) -> bool:
        return self.partitions is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "partitions": self.partitions,
            "exists": self.exists,
            "roles": [role.to_dict() for role in self.roles],
        }


def list_topics(
    kafka: KafkaSettings | None = None,
    *,
    pipeline: Pipeline | None = None,
    internal: bool = False,
) -> list[TopicSummary]:
    """The cluster's topics by name; with ``pipeline``, that pipeline's topics (missing ones too).

    Kafka's own topics (``__consumer_offsets``, ``__transaction_state``) only with ``internal``.
    """
    settings = kafka or KafkaSettings()
    existing = _existing(AdminClient(settings.client_config()), settings)
    counts = {name: len(meta.partitions) for name, meta in existing.items()}
    if pipeline is not None:
        return [
            TopicSummary(name, counts.get(name), tuple(roles))
            for name, roles in topic_roles(pipeline).items()
        ]
    stats = (TopicRole("internal"),)
    return [
        TopicSummary(name, counts[name], stats if name == STATS_TOPIC else ())
        for name in sorted(counts)
        if internal or not name.startswith("__")
    ]


@dataclass(frozen=True)
class PartitionDetail:
    partition: int
    leader: int | None
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    earliest: int  # the log start offset
    latest: int  # the high watermark (read_committed readers stop at the LSO, at most this)


@dataclass(frozen=True)
class TopicDetail:
    """`streams topics describe`: partitions, the configs set on the topic, its roles."""

    name: str
    partitions: tuple[PartitionDetail, ...]
    config: dict[str, str]  # set on the topic itself (not broker or built-in defaults)
    roles: tuple[TopicRole, ...] = ()

    @property
    def replication_factor(self) -> int:
        return len(self.partitions[0].replicas) if self.partitions else 0

    @property
    def records(self) -> int:
        """Offsets held (latest - earliest), summed: records plus any transaction markers."""
        return sum(p.latest - p.earliest for p in self.partitions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "partitions": [
                vars(p) | {"replicas": list(p.replicas), "isr": list(p.isr)}
                for p in self.partitions
            ],
            "replication_factor": self.replication_factor,
            "config": self.config,
            "roles": [role.to_dict() for role in self.roles],
        }


def describe_topics(
    names: Iterable[str], kafka: KafkaSettings | None = None, *, pipeline: Pipeline | None = None
) -> list[TopicDetail]:
    """Partitions (leader, replicas, ISR, offsets), topic configs and roles of each topic."""
    settings = kafka or KafkaSettings()
    admin = AdminClient(settings.client_config())
    wanted = list(dict.fromkeys(names))
    _require_existing(wanted, _existing(admin, settings), settings)
    roles = topic_roles(pipeline) if pipeline is not None else {}
    described = admin.describe_topics(TopicCollection(wanted))
    resources = {name: ConfigResource("TOPIC", name) for name in wanted}
    configs = admin.describe_configs(list(resources.values()))
    details = []
    for name in wanted:
        topic = described[name].result(timeout=_TIMEOUT_S)
        offsets = _offsets(admin, name, [p.id for p in topic.partitions])
        entries = configs[resources[name]].result(timeout=_TIMEOUT_S)
        details.append(
            TopicDetail(
                name=name,
                partitions=tuple(
                    PartitionDetail(
                        partition=p.id,
                        leader=None if p.leader is None else p.leader.id,
                        replicas=tuple(r.id for r in p.replicas),
                        isr=tuple(r.id for r in p.isr),
                        earliest=offsets[p.id][0],
                        latest=offsets[p.id][1],
                    )
                    for p in sorted(topic.partitions, key=lambda p: p.id)
                ),
                config={
                    key: str(entry.value)
                    for key, entry in sorted(entries.items())
                    if entry.source == _TOPIC_CONFIG_SOURCE
                },
                roles=tuple(roles.get(name, ())),
            )
        )
    return details


# ConfigSource.DYNAMIC_TOPIC_CONFIG: a value set on the topic itself
_TOPIC_CONFIG_SOURCE = 1


def _offsets(admin: AdminClient, topic: str, partitions: list[int]) -> dict[int, tuple[int, int]]:
    """(earliest, latest) offsets of each partition."""
    found: dict[int, list[int]] = {p: [0, 0] for p in partitions}
    specs = (OffsetSpec.earliest(), OffsetSpec.latest())  # type: ignore[no-untyped-call]  # untyped in confluent-kafka
    for index, spec in enumerate(specs):
        futures = admin.list_offsets(
            {TopicPartition(topic, p): spec for p in partitions},
            isolation_level=IsolationLevel.READ_UNCOMMITTED,
            request_timeout=_TIMEOUT_S,
        )
        for tp, future in futures.items():
            found[tp.partition][index] = future.result(timeout=_TIMEOUT_S).offset
    return {p: (low, high) for p, (low, high) in found.items()}


def delete_topics(names: Iterable[str], kafka: KafkaSettings | None = None) -> list[str]:
    """Delete the topics (all of them exist, or none is deleted); returns their names."""
    settings = kafka or KafkaSettings()
    admin = AdminClient(settings.client_config())
    wanted = list(dict.fromkeys(names))
    _require_existing(wanted, _existing(admin, settings), settings)
    futures = admin.delete_topics(wanted, operation_timeout=_TIMEOUT_S)
    for name, future in futures.items():
        try:
            future.result(timeout=_TIMEOUT_S)
        except KafkaException as error:
            raise KafkaClientError(f"cannot delete topic {name}: {_reason(error)}") from error
    return wanted


def _require_existing(names: list[str], existing: dict[str, Any], settings: KafkaSettings) -> None:
    missing = [name for name in names if name not in existing]
    if missing:
        raise UnknownTopicError(
            f"no topic {', '.join(missing)} at {settings.bootstrap_servers}",
            hint="`streams topics list` shows the topics there are"
            + ("" if len(missing) == len(names) else "; nothing was done"),
        )
