"""The `streams` command: a thin layer over the library; each command calls one function."""

from __future__ import annotations

import click

from streams import __version__
from streams.cli.config import config
from streams.cli.deploy import deploy
from streams.cli.dlq import dlq
from streams.cli.lag import lag
from streams.cli.local import local
from streams.cli.monitor import monitor
from streams.cli.produce import produce
from streams.cli.replay import replay
from streams.cli.run import run
from streams.cli.schemas import schemas
from streams.cli.tail import tail_command
from streams.cli.topics import topics
from streams.runtime.logs import quiet_clients

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="streams")
def cli() -> None:
    """Resilient Kafka stream pipelines: exactly-once stages, retry topics, dead-letter topics."""
    # one-shot commands print one error line, never librdkafka's own; `run` and `monitor`
    # configure their logs themselves
    quiet_clients()


cli.add_command(config)
cli.add_command(deploy)
cli.add_command(dlq)
cli.add_command(lag)
cli.add_command(local)
cli.add_command(monitor)
cli.add_command(produce)
cli.add_command(replay)
cli.add_command(run)
cli.add_command(schemas)
cli.add_command(tail_command)
cli.add_command(topics)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
