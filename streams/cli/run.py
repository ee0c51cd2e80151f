"""`streams run MODULE:PIPELINE --stage S [--workers N]` and `--all`."""

from __future__ import annotations

import sys

import click

from streams.cli.options import connection_options
from streams.cli.output import fail_cleanly
from streams.config import KafkaSettings, export_connection
from streams.pipeline import load_pipeline
from streams.runtime.logs import configure_logging
from streams.runtime.publish import StatsPublisher
from streams.runtime.supervisor import Supervisor

__all__ = ["run"]


@click.command()
@click.argument("pipeline", metavar="MODULE:PIPELINE")
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
@connection_options
def run(  # one keyword parameter per option of the command
    *,
    pipeline: str,
    stages: tuple[str, ...],
    all_stages: bool,
    workers: int,
    log_format: str,
    kafka: KafkaSettings,
) -> None:
    """Run stage workers as supervised processes until SIGTERM or Ctrl-C.

    MODULE:PIPELINE names a Python module and the Pipeline variable in it, e.g. shop:pipeline
    for `pipeline = Pipeline(...)` in shop.py. The module is looked up in the working directory
    first, then on PYTHONPATH and in the installed packages (pip install -e . your project).

    Each worker is one process: one consumer in the stage's group and one transactional
    producer. A worker that crashes is restarted (backoff 1 s to 30 s); one that exits 3, 4 or
    5 is not, and the command ends with its code once the others have stopped.

    \b
    Exit codes:
      0  stopped on request (SIGTERM, Ctrl-C): every worker drained and committed
      1  the pipeline could not be loaded, or the settings are wrong (error: and hint: lines)
      2  bad usage (an unknown option, --stage with --all)
      3  a worker stopped on a record it cannot process (see its error line)
      4  a worker was fenced: another process runs the same slot
      5  a worker cannot start: missing topics (`streams topics create`), bad settings,
         a model that does not match its schema
    """
    if all_stages and stages:
        raise click.UsageError("give --stage S (one or more) or --all, not both")
    if not all_stages and not stages:
        raise click.UsageError("give --stage S (one or more), or --all for every stage")
    declared = load_pipeline(pipeline)
    names = [s.name for s in declared.stages] if all_stages else list(stages)
    for name in names:
        declared.component(name)  # unknown stage: a clear error before any process starts
    # the workers read their settings themselves: hand them the flags (and fail here, once,
    # on a bad settings file rather than in every worker)
    export_connection(kafka)
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
