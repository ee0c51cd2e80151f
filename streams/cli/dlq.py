"""`streams dlq ls|show|redrive|tasks|status|cancel MODULE:PIPELINE --stage S`.

Every command reads; `redrive` changes nothing without `--execute` (it prints its plan). Exit
codes: 0 done; 1 an error (or a redrive interrupted: resume it); 3 refused by a safety rule
(nothing changed). The library is `streams.replay`; this module only parses and prints.
"""

from __future__ import annotations

from typing import Any

import click

from streams.cli.options import connection_options
from streams.cli.output import emit_json, fail_cleanly, say, table
from streams.cli.replay_common import (
    filter_options,
    filters_from,
    finish_plan,
    print_plan,
    print_task,
    progress,
    run_stoppable,
    task_outcome,
)
from streams.config import KafkaSettings
from streams.pipeline import load_pipeline
from streams.replay import (
    DlqSummary,
    RedriveRequest,
    ShownRecord,
    cancel_task,
    format_ms,
    list_tasks,
    parse_offsets,
    plan_redrive,
    plan_resume,
    show_dlq,
    summarize_dlq,
    task_status,
)
from streams.replay import execute as execute_redrive

__all__ = ["dlq"]

_STAGE = click.option("--stage", required=True, help="The stage whose DLQ (P.S.dlq) to use.")
_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@click.group()
def dlq() -> None:
    """Inspect a stage's dead-letter topic and redrive it, exactly once."""


@dlq.command("ls")
@click.argument("pipeline", metavar="MODULE:PIPELINE")
@_STAGE
@filter_options
@_JSON
@fail_cleanly
@connection_options
def ls(pipeline: str, stage: str, as_json: bool, kafka: KafkaSettings, **kwargs: Any) -> None:
    """Counts per reason and error class, oldest and newest record, offsets per partition."""
    filters = filters_from(kwargs)
    summary = summarize_dlq(
        load_pipeline(pipeline),
        stage,
        filters,
        kafka=kafka,
        dlq=kwargs["dlq"],
        offsets=parse_offsets(kwargs["offsets"]),
        progress=progress(as_json),
    )
    if as_json:
        emit_json(summary.to_dict())
    else:
        _print_summary(summary)


def _print_summary(summary: DlqSummary) -> None:
    say(
        f"DLQ {summary.topic} (stage {summary.stage}): {summary.total} records, "
        f"{summary.selected} selected (filters: {summary.filters.describe()})"
    )
    say(f"  pending {summary.pending}, redriven {summary.redriven} (recorded in the ledger)")
    for label, found in (("oldest", summary.oldest), ("newest", summary.newest)):
        if found is not None:
            say(f"  {label} {format_ms(found[0])}  {found[1]}")
    if summary.by_cause:
        rows = [(r, c, n) for (r, c), n in summary.by_cause.most_common()]
        table(("REASON", "ERROR-CLASS", "COUNT"), rows)
    foreign = {f: n for f, n in summary.formats.items() if f != "streams"}
    if foreign:
        say("  header formats: " + ", ".join(f"{f} {n}" for f, n in sorted(foreign.items())))
    table(
        ("PARTITION", "LOG-START", "LSO", "SELECTED", "FIRST", "LAST"),
        [
            (p.partition, p.log_start, p.end, p.count, _dash(p.first), _dash(p.last))
            for p in summary.partitions
        ],
    )


def _dash(value: int | None) -> str:
    return "-" if value is None else str(value)


@dlq.command()
@click.argument("pipeline", metavar="MODULE:PIPELINE")
@_STAGE
@filter_options
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@_JSON
@fail_cleanly
@connection_options
def show(
    pipeline: str, stage: str, limit: int, as_json: bool, kafka: KafkaSettings, **kwargs: Any
) -> None:
    """The records themselves: decoded with the stage's codecs where they decode, every header."""
    filters = filters_from(kwargs)
    records = show_dlq(
        load_pipeline(pipeline),
        stage,
        filters,
        kafka=kafka,
        limit=limit,
        dlq=kwargs["dlq"],
        offsets=parse_offsets(kwargs["offsets"]),
    )
    if as_json:
        emit_json([r.to_dict() for r in records])
        return
    for record in records:
        _print_record(record)
    say(f"{len(records)} record(s) shown")


def _print_record(record: ShownRecord) -> None:
    shown = record.to_dict()
    cause = f"{shown['reason'] or '-'}  {shown['error_class'] or '-'}"
    say(f"{shown['record']}  {shown['time']}  {cause}")
    say(
        f"  original     {shown['original'] or '- (unroutable)'}   format {shown['format']}   "
        f"redrives {shown['redrives']}   redriven by {', '.join(record.redriven_by) or '-'}"
    )
    if shown["error_message"]:
        say(f"  error        {shown['error_message']}")
    say(f"  key          {shown['key']}   ({shown['key_decoding']})")
    say(f"  value        {shown['value']}   ({shown['value_decoding']})")
    for index, (name, value) in enumerate(shown["headers"]):
        say(f"  {'headers' if index == 0 else '':<12} {name}={value}")


@dlq.command()
@click.argument("pipeline", metavar="MODULE:PIPELINE")
@_STAGE
@filter_options
@click.option(
    "--to",
    "to",
    default="first-retry",
    show_default=True,
    metavar="first-retry|input|TOPIC",
    help="first-retry: the stage's first retry tier, due now; input: the topic and partition "
    "of streams.original.*; or a topic of the pipeline.",
)
@click.option(
    "--allow-topic",
    "allow_topics",
    multiple=True,
    metavar="TOPIC",
    help="Allow this destination, not one of the pipeline's topics (repeatable).",
)
@click.option(
    "--max-records", type=click.IntRange(min=1), help="Move at most this many, oldest first."
)
@click.option(
    "--max-redrives",
    default=3,
    show_default=True,
    type=click.IntRange(min=1),
    help="Skip a record redriven this often already (the loop guard).",
)
@click.option(
    "--again", is_flag=True, help="Redrive records redriven before (their count goes up)."
)
@click.option("--skip-redriven", is_flag=True, help="Leave out records redriven before.")
@click.option(
    "--rate", type=click.FloatRange(min=0.1), help="At most this many records per second."
)
@click.option(
    "--timestamp",
    type=click.Choice(["original", "now"]),
    default="now",
    show_default=True,
    help="The redriven record's timestamp: the time of the write, or its original one "
    "(refused where the destination's retention would delete it at once).",
)
@click.option(
    "--drop-header",
    "drop_headers",
    multiple=True,
    metavar="NAME",
    help="Leave this header out of the redriven records (repeatable).",
)
@click.option("--resume", metavar="TASK", help="Continue an interrupted redrive.")
@click.option("--execute", is_flag=True, help="Redrive; without it, print the plan only.")
@_JSON
@fail_cleanly
@connection_options
def redrive(  # noqa: PLR0917 - click passes every option by keyword
    pipeline: str,
    stage: str,
    to: str,
    allow_topics: tuple[str, ...],
    max_records: int | None,
    max_redrives: int,
    again: bool,
    skip_redriven: bool,
    rate: float | None,
    timestamp: str,
    drop_headers: tuple[str, ...],
    resume: str | None,
    execute: bool,
    as_json: bool,
    kafka: KafkaSettings,
    **kwargs: Any,
) -> None:
    """Move DLQ records back, exactly once: bytes and headers kept, error headers removed."""
    declared = load_pipeline(pipeline)
    shown = progress(as_json)
    if resume:
        filters_from(kwargs)  # parsed for their errors; a resumed task keeps its own
        plan = plan_resume(declared, stage, resume, kafka=kafka)
    else:
        request = RedriveRequest(
            to=to,
            dlq=kwargs["dlq"],
            filters=filters_from(kwargs),
            offsets=parse_offsets(kwargs["offsets"]),
            max_records=max_records,
            max_redrives=max_redrives,
            again=again,
            skip_redriven=skip_redriven,
            allow_topics=allow_topics,
            rate=rate,
            timestamp=timestamp,
            drop_headers=drop_headers,
        )
        plan = plan_redrive(declared, stage, request, kafka=kafka, progress=shown)
    if not as_json:
        print_plan(plan, verb="redrive")
    finish_plan(plan, as_json=as_json, execute=execute, how="redrive them")
    if not execute:
        return
    say(f"task {plan.task.id}: {'resuming' if plan.resumed else 'starting'}", err=True)
    task = run_stoppable(
        lambda stopper: execute_redrive(plan, kafka=kafka, progress=shown, stopper=stopper)
    )
    task_outcome(
        task, as_json=as_json, plan=plan, resume=f"streams dlq redrive {pipeline} --stage {stage}"
    )


@dlq.command()
@click.argument("pipeline", metavar="MODULE:PIPELINE")
@_STAGE
@_JSON
@fail_cleanly
@connection_options
def tasks(pipeline: str, stage: str, as_json: bool, kafka: KafkaSettings) -> None:
    """The stage's redrives (and copies, resets) the ledger holds, newest first."""
    views = list_tasks(load_pipeline(pipeline), stage, kafka=kafka)
    if as_json:
        emit_json([v.to_dict() for v in views])
        return
    table(
        ("TASK", "KIND", "STATUS", "MOVED", "TO-MOVE", "SKIPPED", "STARTED", "DESTINATION"),
        [
            (
                v.task.id,
                v.task.kind,
                v.status.value,
                v.task.moved,
                v.task.to_move,
                sum(v.task.skipped.values()),
                format_ms(v.task.started_ms),
                v.task.destination_topic or v.task.destination or "-",
            )
            for v in views
        ],
    )
    if not views:
        say("no tasks")


@dlq.command()
@click.argument("pipeline", metavar="MODULE:PIPELINE")
@_STAGE
@click.argument("task")
@_JSON
@fail_cleanly
@connection_options
def status(pipeline: str, stage: str, task: str, as_json: bool, kafka: KafkaSettings) -> None:
    """One task: status, moved, to move, skipped by reason."""
    view = task_status(load_pipeline(pipeline), stage, task, kafka=kafka)
    if as_json:
        emit_json(view.to_dict())
    else:
        print_task(view)


@dlq.command()
@click.argument("pipeline", metavar="MODULE:PIPELINE")
@_STAGE
@click.argument("task")
@_JSON
@fail_cleanly
@connection_options
def cancel(pipeline: str, stage: str, task: str, as_json: bool, kafka: KafkaSettings) -> None:
    """Stop a task at its next transaction boundary; what it moved stays moved."""
    view = cancel_task(load_pipeline(pipeline), stage, task, kafka=kafka)
    if as_json:
        emit_json(view.to_dict())
    else:
        print_task(view)
