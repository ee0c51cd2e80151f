"""Structured logs: the JSON and text formatters, and configure_logging's prefix."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest

from streams.runtime.logs import JsonFormatter, TextFormatter, configure_logging


def make_record(
    message: str = "worker %s started",
    args: tuple[object, ...] = ("validate/0",),
    level: int = logging.WARNING,
    extra: dict[str, object] | None = None,
) -> logging.LogRecord:
    logger = logging.getLogger("streams.unit")
    record = logger.makeRecord(
        "streams.unit", level, __file__, 10, message, args, None, extra=extra
    )
    record.created = 1_790_000_000.25
    record.msecs = 250.0
    return record


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_is_one_object_with_the_extra_fields() -> None:
    record = make_record(extra={"worker": "validate/0", "pid": 42, "stats": {"consumed": 3}})

    line = JsonFormatter().format(record)

    assert "\n" not in line
    assert json.loads(line) == {
        "ts": "2026-09-21T14:13:20.250Z",
        "level": "warning",
        "logger": "streams.unit",
        "event": "worker validate/0 started",
        "worker": "validate/0",
        "pid": 42,
        "stats": {"consumed": 3},
    }


class Opaque:
    def __str__(self) -> str:
        return "opaque thing"


def test_json_renders_values_it_cannot_encode_as_strings() -> None:
    record = make_record(extra={"thing": Opaque()})

    assert json.loads(JsonFormatter().format(record))["thing"] == "opaque thing"


def fail() -> None:
    raise ValueError("bad value")


def test_json_includes_the_exception() -> None:
    try:
        fail()
    except ValueError:
        exc_info = sys.exc_info()
    record = make_record()
    record.exc_info = exc_info

    payload = json.loads(JsonFormatter().format(record))

    assert "ValueError: bad value" in payload["exception"]
    assert payload["exception"].startswith("Traceback")


def test_text_has_level_logger_message_and_extras_as_json() -> None:
    record = make_record(extra={"worker": "validate/0", "exit_code": 3})

    line = TextFormatter().format(record)

    time_part, rest = line.split(" ", 1)
    assert len(time_part) == 8
    assert time_part.count(":") == 2
    assert rest == 'WARNING streams.unit: worker validate/0 started worker="validate/0" exit_code=3'


def test_text_without_extras_has_no_trailing_space() -> None:
    line = TextFormatter().format(make_record(level=logging.INFO))

    assert line.endswith("INFO    streams.unit: worker validate/0 started")


def test_configure_text_with_a_prefix_tags_every_line(root_logger: logging.Logger) -> None:
    configure_logging("text", level="debug", prefix="validate/1")

    (handler,) = root_logger.handlers
    assert root_logger.level == logging.DEBUG
    assert handler.formatter is not None
    line = handler.formatter.format(make_record(extra={"pid": 7}))
    assert line.startswith("[validate/1] ")
    assert line.endswith("WARNING streams.unit: worker validate/0 started pid=7")


def test_configure_json_ignores_the_prefix(root_logger: logging.Logger) -> None:
    configure_logging("json", level="WARNING", prefix="validate/1")

    (handler,) = root_logger.handlers
    assert root_logger.level == logging.WARNING
    assert isinstance(handler.formatter, JsonFormatter)
    assert json.loads(handler.formatter.format(make_record()))["event"] == (
        "worker validate/0 started"
    )


def test_configure_text_without_a_prefix(root_logger: logging.Logger) -> None:
    configure_logging("text")

    (handler,) = root_logger.handlers
    assert isinstance(handler.formatter, TextFormatter)
    assert root_logger.level == logging.INFO


def test_repeated_lines_are_collapsed_by_their_text_not_their_template() -> None:
    """Two lines of one format string with other words are both written; a repeat is counted."""
    from streams.runtime.logs import RepeatFilter  # noqa: PLC0415

    repeats = RepeatFilter(window_s=60)
    opened = make_record("breaker %s -> %s", ("closed", "open"))
    closed = make_record("breaker %s -> %s", ("half_open", "closed"))
    again = make_record("breaker %s -> %s", ("closed", "open"))
    assert repeats.filter(opened)
    assert repeats.filter(closed), "another message of the same template is not a repeat"
    assert not repeats.filter(again), "the same message (numbers aside) is a repeat"
    repeats.window_s = 0
    later = make_record("breaker %s -> %s", ("closed", "open"))
    assert repeats.filter(later)
    assert later.getMessage() == "breaker closed -> open (and 1 more like it in the last 0 s)"
