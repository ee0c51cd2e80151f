"""What the `dlq` and `replay` command groups share: filter options, plans, tasks, signals."""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

import click

from streams.cli.output import EXIT_CHECK_FAILED, EXIT_FAILED, emit_json, say, table
from streams.cli.progress import progress_for
from streams.replay import (
    NO_PROGRESS,
    Filters,
    Plan,
    Progress,
    Status,
    Stopper,
    Task,
    TaskView,
    format_ms,
    parse_header_filters,
    parse_time,
)
from streams.replay.mover import now_ms

__all__ = [
    "filter_options",
    "filters_from",
    "finish_plan",
    "print_plan",
    "print_task",
    "progress",
    "run_stoppable",
    "task_outcome",
]

F = TypeVar("F", bound=Callable[..., Any])


def filter_options(func: F) -> F:
    """--since/--until/--reason/--error-class/--key/--header/--offsets/--dlq, in that order."""
    options = [
        click.option(
            "--dlq",
            metavar="TOPIC",
            help="Read this DLQ instead of the stage's own "
            "(a Spring Kafka or Kafka Connect one, say).",
        ),
        click.option(
            "--offsets",
            multiple=True,
            metavar="P:FROM-TO",
            help="Only these offsets of partition P, inclusive (repeatable).",
        ),
        click.option(
            "--header",
            "header_filters",
            multiple=True,
            metavar="NAME=VALUE",
            help="Only records with this header value (repeatable: all must match).",
        ),
        click.option(
            "--key", "keys", multiple=True, help="Only records with this key (repeatable)."
        ),
        click.option(
            "--error-class",
            "error_classes",
            multiple=True,
            metavar="CLASS",
            help="Only this error class, full or last part (repeatable).",
        ),
        click.option(
            "--reason",
            "reasons",
            multiple=True,
            help="Only this reason (streams.error.reason; repeatable).",
        ),
        click.option("--until", metavar="TIME", help="Dead-lettered before this time."),
        click.option(
            "--since",
            metavar="TIME",
            help="Dead-lettered at or after this time: "
            "ISO-8601 (UTC unless it has a zone) or relative, such as 2h.",
        ),
    ]
    for option in options:
        func = option(func)
    return func


def filters_from(kwargs: dict[str, Any]) -> Filters:
    """The Filters of the options `filter_options` added (popped from ``kwargs``)."""
    stamp = now_ms()
    since = kwargs.pop("since", None)
    until = kwargs.pop("until", None)
    return Filters(
        since_ms=None if since is None else parse_time(since, now_ms=stamp),
        until_ms=None if until is None else parse_time(until, now_ms=stamp),
        reasons=tuple(kwargs.pop("reasons", ())),
        error_classes=tuple(kwargs.pop("error_classes", ())),
        keys=tuple(kwargs.pop("keys", ())),
        headers=parse_header_filters(kwargs.pop("header_filters", ())),
    )


def progress(as_json: bool) -> Progress:
    """A bar or progress lines on stderr (also with --json: stdout stays JSON)."""
    del as_json  # progress goes to stderr either way
    return progress_for() or NO_PROGRESS


def _skips(skipped: dict[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(skipped.items()) if n) or "-"


def print_plan(plan: Plan, *, verb: str) -> None:
    """The plan as a table: per partition, from/to offsets and counts."""
    task = plan.task
    where = task.destination
    if task.destination_topic and task.destination != "topic":
        where = f"{task.destination} ({task.destination_topic})"
    elif task.destination_topic:
        where = task.destination_topic
    head = "resume of" if plan.resumed else "plan:"
    say(f"{verb} {head} {task.source} -> {where}" + (f"  task {task.id}" if plan.resumed else ""))
    if not plan.resumed:
        say(f"filters: {Filters.from_dict(task.filters).describe()}")
    rows = [
        (p.partition, p.start, p.end, p.selected, p.to_move, _skips(dict(p.skipped)))
        for p in plan.partitions
    ]
    table(("PARTITION", "FROM", "TO", "SELECTED", "TO-MOVE", "SKIPPED"), rows)
    if not plan.resumed:
        say(
            f"total: {plan.selected} selected, {plan.to_move} to move, "
            f"{sum(plan.skipped.values())} skipped ({_skips(dict(plan.skipped))})"
        )
    for topic, partitions in sorted(plan.writes.items()):
        named = sorted(p for p in partitions if p is not None)
        keyed = " and by key" if None in partitions else ""
        say(f"writes to {topic}: partitions {named or '-'}{keyed}")
    if task.rate:
        say(f"rate: at most {task.rate:,.0f} records/s")
    for note in plan.notes:
        say(f"note: {note}")


def finish_plan(plan: Plan, *, as_json: bool, execute: bool, how: str) -> None:
    """A dry run's or refused plan's last words, and its exit code (3 when refused)."""
    if as_json and (plan.refused or not execute):
        emit_json({**plan.to_dict(), "executed": False})
    if plan.refused:
        for refusal in plan.refusals:
            say(f"refused: {refusal}", err=True)
        for hint in dict.fromkeys(plan.hints):
            say(f"hint: {hint}", err=True)
        raise SystemExit(EXIT_CHECK_FAILED)
    for hint in dict.fromkeys(plan.hints):
        say(f"hint: {hint}", err=True)
    if not execute and not as_json:
        say(f"dry run: nothing changed; add --execute to {how}")


def print_task(view: TaskView) -> None:
    task = view.task
    say(f"task {task.id}: {view.status.value}")
    fields = [
        ("kind", task.kind),
        ("stage", task.stage),
        ("source", task.source or "-"),
        ("destination", task.destination_topic or task.destination or "-"),
        ("moved", f"{task.moved} of {task.to_move}"),
        ("skipped", _skips(task.skipped)),
        ("rate", f"{task.rate:,.0f}/s" if task.rate else "unlimited"),
        ("started", format_ms(task.started_ms)),
        ("updated", format_ms(task.updated_ms)),
        ("finished", format_ms(task.finished_ms)),
    ]
    if task.failure:
        fields.append(("failure", task.failure))
    for name, value in fields:
        say(f"  {name:<12} {value}")
    if task.offsets:
        table(
            ("TOPIC", "PARTITION", "BEFORE", "AFTER"),
            [(o["topic"], o["partition"], o["before"], o["after"]) for o in task.offsets],
            indent="  ",
        )


def run_stoppable(run: Callable[[Stopper], Task | None]) -> Task | None:
    """Run a task; SIGINT/SIGTERM stop it at its next transaction boundary (a second one: now)."""
    stopper = Stopper()
    previous: dict[int, Any] = {}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stopper.requested:
            signal.signal(signum, previous[signum])
            raise KeyboardInterrupt
        say("stopping at the next transaction boundary (again to stop at once)", err=True)
        stopper.stop()

    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        previous[stop_signal] = signal.signal(stop_signal, on_signal)
    try:
        return run(stopper)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def task_outcome(task: Task | None, *, as_json: bool, plan: Plan, resume: str) -> None:
    """The end of an executed task: its summary, and exit 1 if it did not finish."""
    if task is None:
        if as_json:
            emit_json({**plan.to_dict(), "executed": False, "nothing_to_move": True})
        else:
            say("nothing to move: no task was started")
        return
    view = TaskView(task, task.status)
    if as_json:
        emit_json({**plan.to_dict(), "executed": True, "result": view.to_dict()})
    else:
        print_task(view)
    if task.status is Status.INTERRUPTED:
        say(f"interrupted: task {task.id} stopped at a transaction boundary", err=True)
        say(f"hint: resume it: {resume} --resume {task.id} --execute", err=True)
        raise SystemExit(EXIT_FAILED)
