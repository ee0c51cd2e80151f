"""`streams topics create|list|describe|delete`."""

from __future__ import annotations

import sys

import click

from streams.cli.options import connection_options, pipeline_option
from streams.cli.output import EXIT_CHECK_FAILED, emit_json, fail, fail_cleanly, say
from streams.config import KafkaSettings
from streams.deploy.plan import check_durability
from streams.deploy.render import to_yaml
from streams.deploy.strimzi import kafka_topics
from streams.exceptions import ConfigError
from streams.pipeline import INTERNAL_TOPICS, load_pipeline
from streams.topics import (
    INTERNAL_PURPOSE,
    TopicDetail,
    TopicRole,
    delete_topics,
    describe_topics,
    ensure_topics,
    list_topics,
    topic_roles,
)

__all__ = ["topics"]

EXIT_USAGE = 2


@click.group()
def topics() -> None:
    """Create, list, describe and delete topics; with a pipeline, each topic's role in it."""


@topics.command()
@click.argument("pipeline", metavar="MODULE:PIPELINE")
@click.option(
    "--replication-factor",
    type=click.IntRange(1),
    help="Replication factor of the topics it creates [default: the broker's "
    "default.replication.factor].",
)
@click.option(
    "--min-insync-replicas",
    type=click.IntRange(1),
    help="min.insync.replicas set on the topics it creates [default: the broker's].",
)
@click.option(
    "--emit",
    type=click.Choice(["strimzi"]),
    help="Print resources for an operator instead of creating anything: strimzi writes a "
    "KafkaTopic per topic (retry, DLQ and internal ones included).",
)
@click.option("--cluster", metavar="NAME", help="The Strimzi Kafka cluster (with --emit strimzi).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@fail_cleanly
@connection_options
def create(  # noqa: PLR0917 - one keyword parameter per option
    pipeline: str,
    replication_factor: int | None,
    min_insync_replicas: int | None,
    emit: str | None,
    cluster: str | None,
    as_json: bool,
    kafka: KafkaSettings,
) -> None:
    """Create every topic MODULE:PIPELINE needs (inputs, outputs, retry tiers, DLQs).

    Idempotent. Existing topics that differ from the declaration (partitions, configs, a
    --min-insync-replicas) are reported, never altered: exit 3. A --replication-factor above
    the cluster's broker count creates nothing: exit 1.

    With --emit strimzi --cluster C it contacts no broker and prints Strimzi KafkaTopic
    resources; a topic name Kubernetes refuses (_streams.stats) goes in spec.topicName.
    """
    _check_durability(replication_factor, min_insync_replicas)
    if emit == "strimzi":
        _emit_strimzi(pipeline, cluster, replication_factor, min_insync_replicas)
        return
    if cluster:
        fail(
            "--cluster is for --emit strimzi",
            "add --emit strimzi, or drop --cluster",
            code=EXIT_USAGE,
        )
    report = ensure_topics(
        load_pipeline(pipeline),
        kafka=kafka,
        replication_factor=replication_factor,
        min_insync_replicas=min_insync_replicas,
    )
    if as_json:
        emit_json(
            {
                "created": report.created,
                "unchanged": report.unchanged,
                "differences": report.differences,
            }
        )
    else:
        for name in report.internal_created:
            say(f"created   {name} (internal: {INTERNAL_PURPOSE.get(name, 'framework state')})")
        for name in report.created:
            say(f"created   {name}")
        for name in report.unchanged:
            say(f"exists    {name}")
        for name, problems in report.differences.items():
            say(f"DIFFERS   {name}: {'; '.join(problems)}")
    if not report.ok:
        if not as_json:
            say("hint: alter those topics by hand or change the declaration", err=True)
        sys.exit(EXIT_CHECK_FAILED)


@topics.command("list")
@pipeline_option("Only the topics of this pipeline (MODULE:PIPELINE), with their roles.")
@click.option("--internal", is_flag=True, help="Also Kafka's own topics (__consumer_offsets...).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@fail_cleanly
@connection_options
def list_(pipeline_ref: str | None, internal: bool, as_json: bool, kafka: KafkaSettings) -> None:
    """List the topics of the cluster, or of a pipeline (a declared topic not created: missing)."""
    pipeline = load_pipeline(pipeline_ref) if pipeline_ref else None
    found = list_topics(kafka, pipeline=pipeline, internal=internal)
    if as_json:
        emit_json({"topics": [summary.to_dict() for summary in found]})
        return
    width = max((len(s.name) for s in found), default=5)
    say(f"{'TOPIC':<{width}}  PARTITIONS" + ("  ROLE" if pipeline else ""))
    for summary in found:
        count = "missing" if summary.partitions is None else str(summary.partitions)
        line = f"{summary.name:<{width}}  {count:<10}"
        if pipeline is not None:
            line += "  " + _roles(summary.roles)
        say(line.rstrip())


@topics.command()
@click.argument("names", metavar="[TOPIC]...", nargs=-1)
@pipeline_option(
    "Show each topic's role in this pipeline (MODULE:PIPELINE); without TOPIC, "
    "describe every topic of the pipeline."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@fail_cleanly
@connection_options
def describe(
    names: tuple[str, ...], pipeline_ref: str | None, as_json: bool, kafka: KafkaSettings
) -> None:
    """Partitions (leader, replicas, ISR, offsets), the configs set on each topic, its role."""
    pipeline = load_pipeline(pipeline_ref) if pipeline_ref else None
    if not names:
        if pipeline is None:
            raise click.UsageError("name a TOPIC, or give --pipeline to describe its topics")
        names = tuple(topic_roles(pipeline))
    details = describe_topics(names, kafka, pipeline=pipeline)
    if as_json:
        emit_json({"topics": [detail.to_dict() for detail in details]})
        return
    for index, detail in enumerate(details):
        if index:
            say()
        _print_detail(detail, with_roles=pipeline is not None)


@topics.command()
@click.argument("names", metavar="TOPIC...", nargs=-1, required=True)
@click.option("--yes", is_flag=True, help="Do not ask before deleting.")
@fail_cleanly
@connection_options
def delete(names: tuple[str, ...], yes: bool, kafka: KafkaSettings) -> None:
    """Delete topics and every record in them. Asks first, unless --yes."""
    if not yes:
        if not sys.stdin.isatty():
            fail(
                f"refusing to delete {', '.join(names)} without confirmation",
                "pass --yes to delete without asking",
            )
        listed = ", ".join(names)
        click.confirm(
            f"Delete {listed} at {kafka.bootstrap_servers}, with every record in them?",
            abort=True,
        )
    for name in delete_topics(names, kafka):
        say(f"deleted   {name}")


def _check_durability(replication_factor: int | None, min_insync_replicas: int | None) -> None:
    if replication_factor is not None and min_insync_replicas is not None:
        try:
            check_durability(replication_factor, min_insync_replicas)
        except ConfigError as error:
            fail(error.message, error.hint, code=EXIT_USAGE)


def _emit_strimzi(
    pipeline: str,
    cluster: str | None,
    replication_factor: int | None,
    min_insync_replicas: int | None,
) -> None:
    """Print a KafkaTopic per topic of the pipeline (and the internal ones); no broker."""
    if not cluster:
        fail("--emit strimzi needs --cluster", "name the Strimzi Kafka cluster", code=EXIT_USAGE)
    declared = load_pipeline(pipeline)
    resources = kafka_topics(
        [*declared.topic_specs(), *INTERNAL_TOPICS],
        cluster=cluster,
        replication_factor=replication_factor,
        min_insync_replicas=min_insync_replicas,
    )
    click.echo(to_yaml(resources), nl=False)


def _roles(roles: tuple[TopicRole, ...]) -> str:
    return ", ".join(role.describe() for role in roles) or "-"


def _print_detail(detail: TopicDetail, *, with_roles: bool) -> None:
    say(
        f"{detail.name}  partitions {len(detail.partitions)}  replication factor "
        f"{detail.replication_factor}  offsets held {detail.records}"
    )
    if with_roles:
        say(f"  role:    {_roles(detail.roles)}")
    config = ", ".join(f"{key}={value}" for key, value in detail.config.items())
    say(f"  config:  {config or '(broker defaults)'}")
    say("  PARTITION  LEADER  REPLICAS  ISR  EARLIEST  LATEST")
    for p in detail.partitions:
        replicas = ",".join(map(str, p.replicas))
        isr = ",".join(map(str, p.isr))
        leader = "-" if p.leader is None else str(p.leader)
        say(
            f"  {p.partition:<9}  {leader:<6}  {replicas:<8}  {isr:<3}  {p.earliest:<8}  {p.latest}"
        )
