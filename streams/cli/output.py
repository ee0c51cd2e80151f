"""All printing of the command line happens here, and the mapping of errors to exit codes.

Exit codes: 0 success; 1 the operation failed (the message says why and what to do);
2 bad usage (click's own, and ours through ``click.UsageError``); 3 a check ran and found a
problem (for example `local status` with the stack down, or an invariant that does not hold).

Colour: only on a terminal, and never when ``NO_COLOR`` is set (https://no-color.org); ``say``
strips the styles of every line otherwise, whoever styled it.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn, ParamSpec, TypeVar

import click
from pydantic import ValidationError

from streams.config import TerminalSettings
from streams.exceptions import RefusedError, StreamsError
from streams.serde.json import validation_summary

__all__ = [
    "EXIT_CHECK_FAILED",
    "EXIT_FAILED",
    "colour_on",
    "emit_json",
    "fail",
    "fail_cleanly",
    "say",
    "style",
    "table",
]

EXIT_FAILED = 1
EXIT_CHECK_FAILED = 3

P = ParamSpec("P")
R = TypeVar("R")


@functools.cache
def _colour_allowed() -> bool:
    return TerminalSettings().colour_allowed


def colour_on(*, err: bool = False) -> bool:
    """True when lines written to stdout (or stderr) may carry colour."""
    stream = sys.stderr if err else sys.stdout
    return _colour_allowed() and stream.isatty()


def style(text: str, *, err: bool = False, **styles: Any) -> str:
    """``text`` styled with click's ``styles`` (fg=, bold=, dim=) when colour is on."""
    return click.style(text, **styles) if colour_on(err=err) else text


def say(message: str = "", *, err: bool = False) -> None:
    # color=None: click strips styles when the stream is not a terminal; False: always
    click.echo(message, err=err, color=None if _colour_allowed() else False)


def table(columns: Sequence[str], rows: Iterable[Sequence[object]], *, indent: str = "") -> None:
    """Columns left-aligned, as wide as their widest cell."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    for row in [list(columns), *cells]:
        say(indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def emit_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))


def fail(
    message: str, hint: str = "", *, code: int = EXIT_FAILED, label: str = "error"
) -> NoReturn:
    """Print ``error: message`` (and ``hint: ...``) on stderr and exit with ``code``."""
    click.echo(f"{label}: {message}", err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)
    sys.exit(code)


def fail_cleanly(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a StreamsError (or invalid settings) into `error: ...` / `hint: ...`, exit 1.

    A ``RefusedError`` (a safety rule said no; nothing was changed) prints `refused: ...` and
    exits 3.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except StreamsError as error:
            if isinstance(error, RefusedError):
                fail(error.message, error.hint, code=EXIT_CHECK_FAILED, label="refused")
            fail(error.message, error.hint)
        except ValidationError as error:  # a STREAMS_* variable or a file value of a wrong type
            fail(
                f"invalid settings: {validation_summary(error)}",
                "fix the STREAMS_* variable or the settings file (streams.toml, profiles.toml)",
            )

    return wrapper
