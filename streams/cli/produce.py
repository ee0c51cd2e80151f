"""`streams produce TOPIC [FILE]`: one record per line, from stdin or a file."""

from __future__ import annotations

from typing import BinaryIO

import click

from streams.cli.options import connection_options, pipeline_option
from streams.cli.output import emit_json, fail_cleanly, say
from streams.config import KafkaSettings
from streams.pipeline import load_pipeline
from streams.produce import LineEncoder, produce_lines

__all__ = ["produce"]


def _header(text: str) -> tuple[str, bytes | None]:
    name, equals, value = text.partition("=")
    if not name:
        raise click.BadParameter(f"{text!r}: give NAME=VALUE (or NAME alone for a null value)")
    return name, value.encode() if equals else None


@click.command()
@click.argument("topic")
@click.argument("file", type=click.File("rb"), default="-")
@click.option("-k", "--key", help="The key of every record.")
@click.option(
    "-K",
    "--key-separator",
    metavar="SEP",
    help="Each line is KEY<SEP>VALUE (kcat's -K), e.g. -K ':'.",
)
@click.option(
    "-H",
    "--header",
    "headers",
    multiple=True,
    metavar="NAME=VALUE",
    help="A header on every record (repeatable); NAME alone writes a null value.",
)
@click.option("--partition", type=click.IntRange(0), help="Write to this partition only.")
@pipeline_option(
    "Encode through this pipeline's codecs for TOPIC: each line is JSON, validated by the "
    "model, written as JSON or Avro (schema registered in the registry)."
)
@click.option(
    "--stage", help="With --pipeline: use the codecs of this stage's input, whatever TOPIC is."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@fail_cleanly
@connection_options
# Over 50 lines: its docstring is the command's --help text; the body is short.
def produce(  # one keyword parameter per option of the command
    *,
    topic: str,
    file: BinaryIO,
    key: str | None,
    key_separator: str | None,
    headers: tuple[str, ...],
    partition: int | None,
    pipeline_ref: str | None,
    stage: str | None,
    as_json: bool,
    kafka: KafkaSettings,
) -> None:
    """Write one record per line of FILE (default: stdin) to TOPIC.

    Lines are written as they are (JSON, text) unless --pipeline is given; blank lines are
    skipped. The producer is idempotent (acks=all). Exit 1 if a line does not encode or a
    record is not written; the records before it were written, and the error says how many.

    \b
    echo '{"order_id": "o-1"}' | streams produce shop.orders --key o-1
    streams produce shop.orders orders.txt -K '|' -H source=backfill
    streams produce shop.accepted accepted.jsonl --pipeline shop:pipeline   # Avro
    """
    if key is not None and key_separator is not None:
        raise click.UsageError("give --key or --key-separator, not both")
    if stage is not None and pipeline_ref is None:
        raise click.UsageError("--stage needs --pipeline MODULE:PIPELINE")
    codecs = None
    if pipeline_ref is not None:
        codecs = load_pipeline(pipeline_ref).codecs_of(topic, stage=stage)
    encoder = LineEncoder(
        value_codec=codecs[0] if codecs else None,
        key_codec=codecs[1] if codecs else None,
        key=key,
        key_separator=key_separator,
        kafka=kafka,
    )
    report = produce_lines(
        topic,
        file,
        encoder=encoder,
        headers=[_header(text) for text in headers],
        partition=partition,
        kafka=kafka,
    )
    if as_json:
        emit_json(report.to_dict())
        return
    spread = ", ".join(f"{p}: {n}" for p, n in sorted(report.partitions.items()))
    say(
        f"wrote {report.records} record(s) to {topic}"
        + (f" (partition {spread})" if spread else "")
    )
