"""`streams topics create MODULE:PIPELINE`."""

from __future__ import annotations

import sys

import click

from streams.cli.output import EXIT_CHECK_FAILED, emit_json, fail_cleanly, say
from streams.pipeline import REPLAY_LEDGER_TOPIC, STATS_TOPIC, load_pipeline
from streams.topics import ensure_topics

__all__ = ["topics"]

_INTERNAL = {
    STATS_TOPIC: "worker stats for `streams monitor`",
    REPLAY_LEDGER_TOPIC: "the replay ledger of `streams dlq` and `streams replay`",
}


@click.group()
def topics() -> None:
    """Create and check the topics of a pipeline."""


@topics.command()
@click.argument("pipeline")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@fail_cleanly
def create(pipeline: str, as_json: bool) -> None:
    """Create every topic PIPELINE (MODULE:PIPELINE) needs. Exit 3 if existing ones differ."""
    report = ensure_topics(load_pipeline(pipeline))
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
            say(f"created   {name} (internal: {_INTERNAL.get(name, 'framework state')})")
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
