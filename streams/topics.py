"""Create the topics a pipeline needs, and report how existing ones differ from the declaration."""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource  # the public re-export is untyped
from confluent_kafka.cimpl import NewTopic

from streams.config import KafkaSettings
from streams.exceptions import KafkaClientError
from streams.pipeline import INTERNAL_TOPICS, Pipeline, TopicSpec

__all__ = ["TopicReport", "ensure_topics"]

_TIMEOUT_S = 30
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
    pipeline: Pipeline, *, kafka: KafkaSettings | None = None, replication_factor: int = 1
) -> TopicReport:
    """Create missing topics; compare partitions and config of existing ones. Idempotent.

    Differences are reported, never changed silently: fewer partitions cannot be undone and
    more partitions move keys between partitions, so that is an operator's decision.
    """
    settings = kafka or KafkaSettings()
    admin = AdminClient(settings.client_config())
    specs = pipeline.topic_specs()
    try:
        existing = admin.list_topics(timeout=_REACH_TIMEOUT_S).topics
    except KafkaException as error:
        raise KafkaClientError(
            f"cannot reach Kafka at {settings.bootstrap_servers} "
            f"(no answer in {_REACH_TIMEOUT_S} s: {_reason(error)})",
            hint=f"check that the broker runs and that {settings.bootstrap_source} is right "
            "(`streams local status` for the local stack)",
        ) from error
    report = TopicReport()
    internal = [spec for spec in INTERNAL_TOPICS if spec.name not in existing]
    if internal:
        internal_report = TopicReport()
        _create(admin, internal, replication_factor, internal_report)
        report.internal_created = internal_report.created
    missing = [spec for spec in specs if spec.name not in existing]
    raced = _create(admin, missing, replication_factor, report) if missing else set()
    counts = {name: len(meta.partitions) for name, meta in existing.items()}
    if raced:
        # ask for these by name: a metadata listing right after the race can still miss them
        described = admin.describe_topics(TopicCollection(sorted(raced)))
        for name, future in described.items():
            counts[name] = len(future.result(timeout=_TIMEOUT_S).partitions)
    for spec in specs:
        if spec.name in counts and spec.name not in report.created:
            problems = _compare(admin, spec, counts[spec.name])
            if problems:
                report.differences[spec.name] = problems
            else:
                report.unchanged.append(spec.name)
    return report


def _create(
    admin: AdminClient, missing: list[TopicSpec], replication_factor: int, report: TopicReport
) -> set[str]:
    """Create the missing topics; returns those someone else created since the listing."""
    futures = admin.create_topics(
        [
            NewTopic(
                spec.name,
                num_partitions=spec.partitions,
                replication_factor=replication_factor,
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


def _reason(error: KafkaException) -> str:
    """librdkafka's own words for an error, without the KafkaError{...} wrapping."""
    kafka_error = error.args[0] if error.args else None
    if isinstance(kafka_error, KafkaError):
        return str(kafka_error.str())
    return str(error)
