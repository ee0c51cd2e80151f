"""Structured logs: one line per event, as text for people or JSON for machines.

Every process of the framework logs through ``configure_logging``, which also keeps the logs
readable when something fails for a while:

- librdkafka's own lines (logger ``streams.kafka.client``, see ``streams.config``) come through
  Python's logging; its "error" level for a broker it cannot reach is logged as WARNING (the
  failure that matters reaches us as an exception, and says so at ERROR);
- a line that repeats (the same message with other numbers in it) is written once, then
  counted; after ``REPEAT_WINDOW_S`` the next one says how many were left out;
- the schema registry client's HTTP request lines are kept at DEBUG.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from typing import Any

from streams.config import CLIENT_LOGGER

__all__ = ["REPEAT_WINDOW_S", "RepeatFilter", "configure_logging", "quiet_clients"]

# A repeated line is written at most once per window (then with a count of those left out).
REPEAT_WINDOW_S = 30.0
_NUMBERS = re.compile(r"\d+")
# Loggers whose INFO lines are noise for an operator: one per HTTP request of the registry.
_CHATTY = ("httpx", "httpx2", "httpcore")

# Attributes every LogRecord has; anything else was passed through ``extra=`` and is data.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            **_extras(record),  # first, so an extra named like a standard key cannot replace it
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = _extras(record)
        tail = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in extras.items())
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name}: "
        line += record.getMessage() + (f" {tail}" if tail else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class RepeatFilter(logging.Filter):
    """Lets a line through once per window; the others like it are counted, then reported.

    Lines are alike when they have the same logger, level and text with the numbers taken out
    (offsets, ports, milliseconds differ from one repeat to the next).
    """

    def __init__(self, window_s: float = REPEAT_WINDOW_S) -> None:
        super().__init__()
        self.window_s = window_s
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING and record.name != CLIENT_LOGGER:
            return True  # our own info lines are not repeats to collapse
        text = record.getMessage()
        key = (record.name, record.levelno, _NUMBERS.sub("#", text)[:200])
        now = time.monotonic()
        with self._lock:
            first, left_out = self._seen.get(key, (0.0, 0))
            if first and now - first < self.window_s:
                self._seen[key] = (first, left_out + 1)
                return False
            self._seen[key] = (now, 0)
            if len(self._seen) > 10_000:  # noqa: PLR2004 - bounds the memory of the filter
                self._seen.clear()
        if left_out:
            record.msg = f"{text} (and {left_out} more like it in the last {now - first:.0f} s)"
            record.args = None
        return True


class _ClientLevels(logging.Filter):
    """librdkafka's lines: its ERROR for a broker it cannot reach is a WARNING to us."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_clients() -> None:
    """For one-shot commands: no librdkafka line reaches the output (the error line says why)."""
    client = logging.getLogger(CLIENT_LOGGER)
    client.setLevel(logging.CRITICAL + 1)
    client.propagate = False


def configure_logging(fmt: str = "text", level: str = "INFO", prefix: str = "") -> None:
    """Log to stderr in ``text`` or ``json``; ``prefix`` tags every text line (worker name)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RepeatFilter())
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    if prefix and fmt != "json":
        base = formatter

        class Prefixed(logging.Formatter):
            def format(self, record: logging.LogRecord) -> str:
                return f"[{prefix}] {base.format(record)}"

        formatter = Prefixed()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    client = logging.getLogger(CLIENT_LOGGER)
    client.setLevel(logging.NOTSET)
    client.propagate = True
    if not any(isinstance(f, _ClientLevels) for f in client.filters):
        client.addFilter(_ClientLevels())
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
