"""`streams lag`: consumer lag per partition, with status, from the library's LagMonitor.

With ``--pipeline`` each stage also shows its workers (running of desired), from the records
``streams run`` publishes to ``_streams.stats``: below the desired count is WARN, none left ERR.

Exit codes: 0 every group is OK or WARN; 3 some group (or stage) is STALL, STOP, REWIND or ERR (in
``--watch``, as of the last snapshot before Ctrl-C); 1 Kafka unreachable or a bad ``--pipeline``.
A single snapshot has no history, so it can only show OK, lag, ERR (data lost to retention, or
a group that does not exist) and WARN for a group with no members but lag; STOP, STALL, REWIND
and a growing lag need ``--watch`` (statuses evolve as samples accumulate).

Replay marks (``streams.lag.marks``): a group that a replay task affects (a redrive or copy
into its input, a reset in the last 10 minutes, from the ledger ``_streams.replay``) keeps its
status, and the table says which task explains it (``REWIND (reset task T, 2 min ago, 10 min
window)``) or, for a status no task explains, names the task below the group. ``--json`` gives
every partition (and, with ``--pipeline``, every stage) ``replay``, its group's tasks, and
``explained_by``. A REWIND explained by a reset does not make the exit code 3.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import click

from streams.cli.output import EXIT_CHECK_FAILED, emit_json, fail_cleanly, say
from streams.config import KafkaSettings
from streams.lag import (
    GroupLag,
    LagMonitor,
    PartitionLag,
    PipelineView,
    ReplayMark,
    StateProgress,
    Status,
    lag_hints,
)
from streams.lag.marks import explains
from streams.observability.stats_reader import StatsReader
from streams.pipeline import Pipeline, load_pipeline
from streams.replay import ReplayMarks

__all__ = ["lag"]

_FAILING = frozenset({Status.STALL, Status.STOP, Status.REWIND, Status.ERR})
_COLOURS = {
    Status.OK: "green",
    Status.WARN: "yellow",
    Status.STALL: "magenta",
    Status.REWIND: "cyan",
    Status.STOP: "red",
    Status.ERR: "red",
}
_COLUMNS = ("GROUP", "TOPIC", "PART", "COMMITTED", "LOG-START", "HW", "LSO", "LAG", "LAG-S")


@click.command()
@click.option("--group", "groups", multiple=True, help="A consumer group (repeatable).")
@click.option("--pipeline", "reference", help="MODULE:PIPELINE: its stages' groups, per stage.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--watch", is_flag=True, help="Redraw every --interval seconds until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True)
@fail_cleanly
def lag(
    groups: tuple[str, ...], reference: str | None, as_json: bool, watch: bool, interval: float
) -> None:
    """Lag of consumer groups per partition (all groups unless --group/--pipeline)."""
    pipeline = load_pipeline(reference) if reference else None
    # the supervisors' records say how many workers each stage runs of how many it wants
    stats = StatsReader() if pipeline is not None else None
    kafka = KafkaSettings()
    with LagMonitor(kafka, replay=ReplayMarks(kafka)) as monitor:
        try:
            failing = _snapshot(monitor, groups, pipeline, stats, as_json=as_json, watch=watch)
            while watch:
                time.sleep(interval)
                failing = _snapshot(monitor, groups, pipeline, stats, as_json=as_json, watch=watch)
        except KeyboardInterrupt:
            pass
        finally:
            if stats is not None:
                stats.close()
    if failing:
        sys.exit(EXIT_CHECK_FAILED)


def _snapshot(
    monitor: LagMonitor,
    groups: tuple[str, ...],
    pipeline: Pipeline | None,
    stats: StatsReader | None,
    *,
    as_json: bool,
    watch: bool,
) -> bool:
    """Sample once and print; True if some group or stage is STALL, STOP, REWIND or ERR."""
    view: PipelineView | None = None
    if pipeline is not None:
        hints = lag_hints(pipeline)
        wanted = list(dict.fromkeys([*hints, *groups]))
        sampled = monitor.sample(wanted, topics=hints)
        supervisors = []
        states: dict[str, StateProgress] = {}
        if stats is not None:
            stats.catch_up()
            supervisors = stats.supervisors()
            states = _states(stats)
        view = monitor.pipeline_view(pipeline, sampled, supervisors=supervisors, states=states)
    else:
        sampled = monitor.sample(groups or None)
    if as_json:
        partitions = [_partition_dict(g, p) for g in sampled for p in g.partitions]
        payload: Any = {**view.to_dict(), "partitions": partitions} if view else partitions
        emit_json(payload)
    else:
        if watch:
            click.clear()
        _print_table(sampled, colour=watch)
        if view is not None:
            _print_view(view, colour=watch)
    stages = view.stages if view is not None else ()
    return any(_failing(g.status, g.explained_by) for g in sampled) or any(
        _failing(s.status, s.explained_by) for s in stages
    )


def _failing(status: Status, explained_by: str | None) -> bool:
    """A failing status, unless a replay task explains it (only a reset can explain one: a
    REWIND; ``streams.lag.marks``)."""
    return status in _FAILING and explained_by is None


def _partition_dict(group: GroupLag, partition: PartitionLag) -> dict[str, Any]:
    return {**partition.to_dict(), "replay": [mark.to_dict() for mark in group.replay]}


def _states(stats: StatsReader) -> dict[str, StateProgress]:
    """group -> an aggregate's state as its live workers report it."""
    counters: dict[str, list[dict[str, float]]] = {}
    for worker in stats.workers():  # the live ones
        counters.setdefault(worker.group, []).append(worker.counters)
    return {group: StateProgress.of(found) for group, found in counters.items()}


def _style(status: Status, text: str, *, colour: bool) -> str:
    return click.style(text, fg=_COLOURS[status], bold=status in _FAILING) if colour else text


def _cells(p: PartitionLag) -> list[str]:
    return [
        p.group,
        p.topic,
        str(p.partition),
        "no commit" if p.committed is None else str(p.committed),
        str(p.log_start),
        str(p.high_watermark),
        str(p.last_stable_offset),
        "-" if p.lag is None else str(p.lag),
        "-" if p.lag_seconds is None else f"{p.lag_seconds:.1f}",
    ]


def _print_table(groups: list[GroupLag], *, colour: bool) -> None:
    rows = [(p, _cells(p)) for g in groups for p in g.partitions]
    widths = [len(c) for c in _COLUMNS]
    for _, cells in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, cells, strict=True)]
    say("  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths, strict=True)) + "  STATUS")
    for p, cells in rows:
        line = "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
        # an OK row's explanation is left to the group's line (and --json): only a status
        # that would alarm carries it
        because = _because(p.explained_by) if p.status is not Status.OK else ""
        status = _style(p.status, p.status.value, colour=colour) + because
        say(f"{line}  {status}  {p.rule}")
    for g in groups:
        status = _style(g.status, g.status.value, colour=colour)
        say(
            f"group {g.group} ({g.state}, {g.members} members): {status} sum lag {g.sum_lag}; "
            f"{g.rule}"
        )
        _print_marks(g.status, g.sum_lag, g.explained_by, g.replay, indent="  ")
    if not groups:
        say("no consumer groups")


def _print_view(view: PipelineView, *, colour: bool) -> None:
    say(f"pipeline {view.pipeline}: end-to-end lag {_seconds(view.end_to_end_lag_seconds)}")
    for stage in view.stages:
        retry = sum(stage.retry_backlog.values())
        status = _style(stage.status, stage.status.value, colour=colour)
        workers = ""
        if stage.workers_desired is not None:
            workers = f", workers {stage.workers_running}/{stage.workers_desired}"
        say(
            f"  {stage.group}: input lag {stage.input_lag} ({_seconds(stage.input_lag_seconds)}), "
            f"retry backlog {retry}, DLQ {stage.dlq_depth}{workers}: {status} {stage.rule}"
        )
        _print_marks(stage.status, stage.input_lag, stage.explained_by, stage.replay, indent="    ")
        if stage.state_topics:
            say(f"    state {', '.join(stage.state_topics)}: {_state(stage.state)}")


def _because(explained_by: str | None) -> str:
    return "" if explained_by is None else f" ({explained_by})"


def _print_marks(
    status: Status,
    lag: int,
    explained_by: str | None,
    marks: Sequence[ReplayMark],
    *,
    indent: str,
) -> None:
    """A line per replay task affecting the group: what it explains, or that it does not."""
    now_ms = round(time.time() * 1000)
    for mark in marks:
        text = mark.describe(now_ms)
        if explained_by is not None and explains(mark, status, lag):
            say(f"{indent}explained by {text}")
        elif status is Status.OK:
            say(f"{indent}replay {text}")
        else:
            say(f"{indent}replay {text} (does not explain {status.value})")


def _state(state: StateProgress | None) -> str:
    if state is None:
        return "no live worker reports it"
    if state.restoring:
        return f"{state.keys:,} keys, restoring {state.restored:,} / {state.to_restore:,} records"
    return f"{state.keys:,} keys"


def _seconds(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f} s"
