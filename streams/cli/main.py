"""The `streams` command: a thin layer over the library; each command calls one function."""

from __future__ import annotations

import click

from streams import __version__
from streams.cli.local import local

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="streams")
def cli() -> None:
    """Resilient Kafka stream pipelines: exactly-once stages, retry topics, dead-letter topics."""


cli.add_command(local)


def main() -> None:
    cli()
