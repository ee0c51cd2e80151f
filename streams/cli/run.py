"""`streams run MODULE:PIPELINE --stage S [--workers N]` and `--all`."""

from __future__ import annotations

import sys

import click

from streams.cli.output import fail_cleanly
from streams.exceptions import TopologyError
from streams.pipeline import load_pipeline
from streams.runtime.logs import configure_logging
from streams.runtime.publish import StatsPublisher
from streams.runtime.supervisor import Supervisor

__all__ = ["run"]


@click.command()
@click.argument("pipeline")
@click.option("--stage", "stages", multiple=True, help="Stage to run (repeatable).")
@click.option("--all", "all_stages", is_flag=True, help="Run every stage of the pipeline.")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Worker processes per stage.",
)
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@fail_cleanly
def run(
    pipeline: str, stages: tuple[str, ...], all_stages: bool, workers: int, log_format: str
) -> None:
    """Run stage workers as supervised processes until SIGTERM or Ctrl-C."""
    declared = load_pipeline(pipeline)
    if all_stages == bool(stages):
        raise TopologyError("give --stage S (one or more) or --all, not both and not neither")
    names = [s.name for s in declared.stages] if all_stages else list(stages)
    for name in names:
        declared.component(name)  # unknown stage: a clear error before any process starts
    configure_logging(log_format, prefix="supervisor")
    supervisor = Supervisor(
        pipeline,
        names,
        workers=workers,
        log_format=log_format,
        groups={name: declared.component(name).group_id for name in names},
        publisher=StatsPublisher.best_effort(),
    )
    sys.exit(supervisor.run())
