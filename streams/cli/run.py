"""`streams run MODULE:PIPELINE --stage S [--workers N | --slot N | --slots A-B | ...]`."""

from __future__ import annotations

import os
import sys

import click

from streams.cli.options import connection_options
from streams.cli.output import fail_cleanly
from streams.config import KafkaSettings, export_connection
from streams.pipeline import load_pipeline
from streams.runtime.logs import configure_logging
from streams.runtime.publish import StatsPublisher
from streams.runtime.slots import SlotError, choose_slots
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
    help="Worker processes per stage (slots 0..N-1).",
)
@click.option(
    "--slot",
    type=int,
    envvar="STREAMS_SLOT",
    show_envvar=True,
    help="Run one worker on slot N (its transactional.id): one slot per host or container.",
)
@click.option("--slots", "slot_range", metavar="A-B", help="One worker per slot A..B inclusive.")
@click.option(
    "--slot-from-hostname",
    is_flag=True,
    help="Slot = the trailing -N of $HOSTNAME (a StatefulSet pod orders-enrich-2: slot 2).",
)
@click.option(
    "--take-over",
    is_flag=True,
    help="Start even if a live worker runs the slot (it is fenced and exits 4).",
)
@click.option(
    "--health-port",
    type=click.IntRange(1, 65535),
    help="Serve /livez and /readyz here; worker i of this run gets PORT+i.",
)
@click.option(
    "--health-host", default="127.0.0.1", show_default=True, help="Address the probes listen on."
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
    slot: int | None,
    slot_range: str | None,
    slot_from_hostname: bool,
    take_over: bool,
    health_port: int | None,
    health_host: str,
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
    Slots: a worker's identity in its stage (transactional.id <pipeline>.<stage>.<slot>).
      --workers N           slots 0..N-1 (the default: one worker, slot 0)
      --slot N              one worker on slot N (also STREAMS_SLOT=N)
      --slots A-B           one worker per slot A..B, e.g. a second host runs --slots 2-3
      --slot-from-hostname  the trailing -N of $HOSTNAME (Kubernetes StatefulSet pods)
    A worker whose slot already runs elsewhere exits 4 before it starts its producer, naming
    the other worker; --take-over starts it anyway and fences the other one.

    \b
    Probes: --health-port P gives worker i /livez and /readyz on P+i (listed in the log).
    kill -HUP <pid of this command> restarts the workers one at a time (drain, commit, start
    the new one, wait for /readyz, next): how a new version of the code is deployed.

    \b
    Exit codes:
      0  stopped on request (SIGTERM, Ctrl-C): every worker drained and committed
      1  the pipeline could not be loaded, or the settings are wrong (error: and hint: lines)
      2  bad usage (an unknown option, --stage with --all, a bad slot option)
      3  a worker stopped on a record it cannot process (see its error line)
      4  another live worker runs the same slot (refused at start, or fenced)
      5  a worker cannot start: missing topics (`streams topics create`), bad settings,
         a model that does not match its schema
    """
    if all_stages and stages:
        raise click.UsageError("give --stage S (one or more) or --all, not both")
    if not all_stages and not stages:
        raise click.UsageError("give --stage S (one or more), or --all for every stage")
    ctx = click.get_current_context()
    try:
        chosen = choose_slots(
            slot=slot,
            slots=slot_range,
            from_hostname=slot_from_hostname,
            hostname=os.environ.get("HOSTNAME"),
            workers=workers,
            workers_given=ctx.get_parameter_source("workers") != click.core.ParameterSource.DEFAULT,
        )
    except SlotError as error:
        raise click.UsageError(str(error)) from error
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
        slots=chosen,
        health_port=health_port,
        health_host=health_host,
        take_over=take_over,
        log_format=log_format,
        groups={name: declared.component(name).group_id for name in names},
        publisher=StatsPublisher.best_effort(),
    )
    sys.exit(supervisor.run())
