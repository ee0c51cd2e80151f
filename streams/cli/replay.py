"""`streams replay reset|copy MODULE:PIPELINE --stage S`: offsets and time-range copies.

Both change nothing without `--execute` (they print their plan). Exit codes: 0 done; 1 an error
(or a copy interrupted: resume it); 3 refused by a safety rule (nothing changed).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import cast

import click

from streams.cli.options import connection_options
from streams.cli.output import EXIT_CHECK_FAILED, emit_json, fail_cleanly, say, table
from streams.cli.replay_common import (
    finish_plan,
    print_plan,
    progress,
    run_stoppable,
    task_outcome,
)
from streams.config import KafkaSettings
from streams.exceptions import BadArgumentError
from streams.pipeline import load_pipeline
from streams.replay import (
    CopyRequest,
    ResetPlan,
    ResetRequest,
    execute_copy,
    execute_reset,
    parse_duration,
    parse_scope,
    parse_time,
    plan_copy,
    plan_copy_resume,
    plan_reset,
    read_plan_file,
)
from streams.replay.mover import now_ms
from streams.replay.reset import Mode, RetryMode

__all__ = ["replay"]

_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@click.group()
def replay() -> None:
    """Reset a stage's offsets, or copy a time range of a topic, exactly once."""


def _request(modes: dict[str, object], group: str) -> ResetRequest:
    """The one reset mode given, as a ResetRequest (``modes``: option name -> value)."""
    # `is not`: --to-offset 0 is a mode given (0 == False)
    given = {
        name: value for name, value in modes.items() if value is not None and value is not False
    }
    if len(given) != 1:
        raise BadArgumentError(
            f"give exactly one reset mode (got {', '.join(given) or 'none'})",
            hint="--to-earliest, --to-latest, --to-datetime T, --by-duration D, --to-offset N, "
            "--shift-by N or --from-file F",
        )
    name, value = next(iter(given.items()))
    if name == "--to-datetime":
        return ResetRequest("datetime", parse_time(str(value), now_ms=now_ms()))
    if name == "--by-duration":
        return ResetRequest("datetime", now_ms() - round(parse_duration(str(value)) * 1000))
    if name == "--from-file":
        return ResetRequest("file", rows=read_plan_file(Path(str(value)), group))
    simple: dict[str, Mode] = {
        "--to-earliest": "earliest",
        "--to-latest": "latest",
        "--to-offset": "offset",
        "--shift-by": "shift",
    }
    return ResetRequest(
        simple[name], value if isinstance(value, int) and value is not True else None
    )


@replay.command()
@click.argument("pipeline", metavar="MODULE:PIPELINE")
@click.option("--stage", required=True, help="The stage or sink whose group to reset.")
@click.option("--to-earliest", "earliest", is_flag=True, help="The log start.")
@click.option("--to-latest", "latest", is_flag=True, help="The last stable offset.")
@click.option(
    "--to-datetime",
    "datetime_",
    metavar="TIME",
    help="The first record at or after TIME (ISO-8601, UTC unless it has a zone; or relative, 2h).",
)
@click.option("--by-duration", "duration", metavar="D", help="--to-datetime of D ago (PT2H, 2h).")
@click.option("--to-offset", "offset", type=int, help="This offset, clamped.")
@click.option("--shift-by", "shift", type=int, help="The committed offset plus N (N < 0: back).")
@click.option(
    "--from-file",
    "from_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The CSV --export prints (topic,partition,offset).",
)
@click.option(
    "--topic",
    "topics",
    multiple=True,
    metavar="T[:P,...]",
    help="Only this input (or retry) topic, or these partitions of it (repeatable).",
)
@click.option(
    "--retry-topics",
    type=click.Choice(["keep", "end", "reset"]),
    default="keep",
    show_default=True,
    help="The stage's retry topics: untouched, skipped to their end, or reset like the inputs.",
)
@click.option("--export", is_flag=True, help="Print the plan as kafka-consumer-groups' CSV.")
@click.option("--execute", is_flag=True, help="Reset; without it, print the plan only.")
@_JSON
@fail_cleanly
@connection_options
def reset(  # noqa: PLR0917 - click passes every option by keyword
    pipeline: str,
    stage: str,
    earliest: bool,
    latest: bool,
    datetime_: str | None,
    duration: str | None,
    offset: int | None,
    shift: int | None,
    from_file: Path | None,
    topics: tuple[str, ...],
    retry_topics: str,
    export: bool,
    execute: bool,
    as_json: bool,
    kafka: KafkaSettings,
) -> None:
    """Move a group's offsets (kafka-consumer-groups' --reset-offsets), refused while it runs."""
    declared = load_pipeline(pipeline)
    group = declared.component(stage).group_id
    modes: dict[str, object] = {
        "--to-earliest": earliest,
        "--to-latest": latest,
        "--to-datetime": datetime_,
        "--by-duration": duration,
        "--to-offset": offset,
        "--shift-by": shift,
        "--from-file": from_file,
    }
    base = _request(modes, group)
    request = dataclasses.replace(
        base, topics=parse_scope(topics), retry_topics=cast("RetryMode", retry_topics)
    )
    plan = plan_reset(declared, stage, request, kafka=kafka)
    _show_reset(plan, export=export, as_json=as_json, execute=execute)
    if not execute:
        if not as_json and not export:
            say("dry run: nothing changed; add --execute to reset")
        return
    task = execute_reset(plan, declared, stage, kafka=kafka)
    if as_json:
        emit_json({**plan.to_dict(), "executed": True, "task": task.id})
    elif not export:
        say(f"reset done ({len(plan.rows)} partitions); recorded as task {task.id}")


def _show_reset(plan: ResetPlan, *, export: bool, as_json: bool, execute: bool) -> None:
    """The plan (CSV, JSON or a table); a refused plan exits 3 here."""
    if export:
        sys.stdout.write(plan.csv())
    elif as_json and (plan.refusals or not execute):
        emit_json({**plan.to_dict(), "executed": False})
    elif not as_json:
        _print_reset(plan)
    if plan.refusals:
        for refusal in plan.refusals:
            say(f"refused: {refusal}", err=True)
        for hint in plan.hints:
            say(f"hint: {hint}", err=True)
        raise SystemExit(EXIT_CHECK_FAILED)


def _print_reset(plan: ResetPlan) -> None:
    members = f", {len(plan.members)} live members" if plan.members else ""
    say(f"reset plan: group {plan.group} ({plan.kind}, {plan.state}{members})")
    if plan.database:
        say(f"offsets stored in the sink's database {plan.database} (rewritten there)")
    table(
        ("GROUP", "TOPIC", "PARTITION", "CURRENT", "NEW", "LOG-START", "LSO", "NOTE"),
        [
            (
                plan.group,
                r.topic,
                r.partition,
                "-" if r.current is None else r.current,
                r.new,
                r.log_start,
                r.end,
                r.note,
            )
            for r in plan.rows
        ],
    )
    if plan.backwards:
        say("note: backwards: the records between NEW and CURRENT are processed again")


@replay.command()
@click.argument("pipeline", metavar="MODULE:PIPELINE")
@click.option("--stage", help="The stage this copy is for (recorded with the task).")
@click.option("--from", "source", required=True, metavar="TOPIC", help="The topic to copy from.")
@click.option("--to", "destination", required=True, metavar="TOPIC", help="The topic to copy to.")
@click.option("--since", metavar="TIME", help="From the first record at or after TIME.")
@click.option("--until", metavar="TIME", help="Up to the first record at or after TIME.")
@click.option("--by-key", is_flag=True, help="Place records by key (unequal partition counts).")
@click.option("--again", is_flag=True, help="Copy records an earlier copy copied already.")
@click.option(
    "--allow-topic",
    "allow_topics",
    multiple=True,
    metavar="TOPIC",
    help="Allow this destination, not one of the pipeline's topics.",
)
@click.option("--rate", type=click.FloatRange(min=0.1), help="At most this many records/s.")
@click.option("--resume", metavar="TASK", help="Continue an interrupted copy.")
@click.option("--execute", is_flag=True, help="Copy; without it, print the plan only.")
@_JSON
@fail_cleanly
@connection_options
def copy(  # noqa: PLR0917 - click passes every option by keyword
    pipeline: str,
    stage: str | None,
    source: str,
    destination: str,
    since: str | None,
    until: str | None,
    by_key: bool,
    again: bool,
    allow_topics: tuple[str, ...],
    rate: float | None,
    resume: str | None,
    execute: bool,
    as_json: bool,
    kafka: KafkaSettings,
) -> None:
    """Copy a time range of a topic into another: key, value, headers, timestamp, partition."""
    declared = load_pipeline(pipeline)
    shown = progress(as_json)
    stamp = now_ms()
    if resume:
        plan = plan_copy_resume(declared, resume, kafka=kafka)
    else:
        request = CopyRequest(
            source=source,
            destination=destination,
            since_ms=None if since is None else parse_time(since, now_ms=stamp),
            until_ms=None if until is None else parse_time(until, now_ms=stamp),
            by_key=by_key,
            again=again,
            allow_topics=allow_topics,
            rate=rate,
        )
        plan = plan_copy(declared, request, kafka=kafka, stage=stage, progress=shown)
    if not as_json:
        print_plan(plan, verb="copy")
    finish_plan(plan, as_json=as_json, execute=execute, how="copy them")
    if not execute:
        return
    say(f"task {plan.task.id}: {'resuming' if plan.resumed else 'starting'}", err=True)
    task = run_stoppable(
        lambda stopper: execute_copy(plan, kafka=kafka, progress=shown, stopper=stopper)
    )
    task_outcome(
        task,
        as_json=as_json,
        plan=plan,
        resume=f"streams replay copy {pipeline} --from {source} --to {destination}",
    )
