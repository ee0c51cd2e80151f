"""`streams tail TOPIC`: the records of a topic, decoded through a pipeline's codecs if given."""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import click
from pydantic import BaseModel

from streams.cli.options import connection_options, pipeline_option
from streams.cli.output import fail_cleanly, say, style
from streams.config import KafkaSettings
from streams.pipeline import load_pipeline
from streams.tail import Start, TailRecord, tail

__all__ = ["escape", "tail_command"]

# Header values longer than this are cut in the text view (a DLQ record's stack is up to 4,000
# bytes); --json shows them whole.
_HEADER_SHOWN_CHARS = 160
# control characters shown as escapes, so that one record is one line
_ESCAPES = {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F) if c not in _ESCAPES}


def escape(data: bytes) -> str:
    r"""Bytes as one printable line: UTF-8 text as it is, anything else as \xNN escapes."""
    text = data.decode("utf-8", errors="backslashreplace")
    return text.translate({**_ESCAPES, **_CONTROL})


@click.command("tail")
@click.argument("topic")
@click.option(
    "-n",
    "--records",
    "count",
    default=10,
    show_default=True,
    type=click.IntRange(0),
    help="Start with the last N records of the topic.",
)
@click.option("--from-beginning", is_flag=True, help="Start with the first record still held.")
@click.option("--offset", type=click.IntRange(0), help="Start at this offset of each partition.")
@click.option(
    "--partition",
    "partitions",
    multiple=True,
    type=click.IntRange(0),
    help="Read only this partition (repeatable).",
)
@click.option("-f", "--follow", is_flag=True, help="Then wait for new records (Ctrl-C stops).")
@click.option("--max", "max_records", type=click.IntRange(1), help="Stop after N records.")
@pipeline_option(
    "Decode keys and values with this pipeline's codecs for TOPIC (retry and DLQ topics: the "
    "stage's input codecs)."
)
@click.option("--stage", help="With --pipeline: decode with this stage's input codecs.")
@click.option(
    "--read-uncommitted",
    is_flag=True,
    help="Also show records of open and aborted transactions (default: read_committed).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per record (JSON Lines).")
@fail_cleanly
@connection_options
# Over 50 lines: its docstring is the command's --help text; the body is short.
def tail_command(  # one keyword parameter per option of the command
    *,
    topic: str,
    count: int,
    from_beginning: bool,
    offset: int | None,
    partitions: tuple[int, ...],
    follow: bool,
    max_records: int | None,
    pipeline_ref: str | None,
    stage: str | None,
    read_uncommitted: bool,
    as_json: bool,
    kafka: KafkaSettings,
) -> None:
    """Print the records of TOPIC: key, value, headers, where each was read.

    By default the last 10 records, read_committed (what a stage reads), then exit; binary
    values show as \\xNN escapes. Reading never joins a group or commits offsets.

    \b
    streams tail shop.orders --from-beginning --max 5
    streams tail shop.accepted --pipeline shop:pipeline -f     # Avro decoded, live
    streams tail shop.accept.dlq --json                        # every header whole
    """
    if from_beginning and offset is not None:
        raise click.UsageError("give --from-beginning or --offset, not both")
    if stage is not None and pipeline_ref is None:
        raise click.UsageError("--stage needs --pipeline MODULE:PIPELINE")
    start = (
        Start.beginning()
        if from_beginning
        else Start.at_offset(offset)
        if offset is not None
        else Start.last(count)
    )
    codecs = None
    if pipeline_ref is not None:
        codecs = load_pipeline(pipeline_ref).codecs_of(topic, stage=stage)
    records = tail(
        topic,
        start=start,
        follow=follow,
        max_records=max_records,
        partitions=list(partitions) or None,
        codecs=codecs,
        read_committed=not read_uncommitted,
        kafka=kafka,
    )
    with contextlib.suppress(KeyboardInterrupt):
        for record in records:
            say(_json_line(record) if as_json else _text(record))


def _timestamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _shown(decoded: Any, raw: bytes | None) -> str:
    if isinstance(decoded, BaseModel):
        return decoded.model_dump_json()
    if isinstance(decoded, str):
        return escape(decoded.encode())
    return "(null)" if raw is None else escape(raw)


def _text(record: TailRecord) -> str:
    head = style(f"{record.coordinates}  {_timestamp(record.timestamp_ms)}", dim=True)
    key = style(f"key={_shown(record.decoded_key, record.key)}", fg="cyan")
    lines = [f"{head}  {key}  {_shown(record.decoded_value, record.value)}"]
    if record.decode_error:
        lines.append(style(f"  ! not decoded: {record.decode_error}", fg="yellow"))
    for name, value in record.headers:
        shown = "(null)" if value is None else escape(value)
        if len(shown) > _HEADER_SHOWN_CHARS:
            shown = (
                f"{shown[:_HEADER_SHOWN_CHARS]}... ({len(value or b'')} bytes; --json shows all)"
            )
        lines.append(f"  {style(name, dim=True)}: {shown}")
    return "\n".join(lines)


def _json_value(decoded: Any, raw: bytes | None) -> dict[str, Any]:
    """``value`` (decoded, text or null) and, for bytes that are not UTF-8, ``value_base64``."""
    if isinstance(decoded, BaseModel):
        return {"value": decoded.model_dump(mode="json")}
    if isinstance(decoded, str):
        return {"value": decoded}
    if raw is None:
        return {"value": None}
    try:
        return {"value": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"value": None, "value_base64": base64.b64encode(raw).decode()}


def _json_line(record: TailRecord) -> str:
    key = {
        f"key{k.removeprefix('value')}": v
        for k, v in _json_value(record.decoded_key, record.key).items()
    }
    payload: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": _timestamp(record.timestamp_ms),
        "timestamp_ms": record.timestamp_ms,
        **key,
        **_json_value(record.decoded_value, record.value),
        "headers": [
            [name, None if value is None else escape(value)] for name, value in record.headers
        ],
    }
    if record.decode_error:
        payload["decode_error"] = record.decode_error
    return json.dumps(payload, default=str)
