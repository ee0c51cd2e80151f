"""All printing of the command line happens here, and the mapping of errors to exit codes.

Exit codes: 0 success; 1 the operation failed (the message says why and what to do);
2 bad usage (click's own); 3 a check ran and found a problem (for example `local status` with
the stack down, or an invariant that does not hold).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ParamSpec, TypeVar

import click

from streams.exceptions import RefusedError, StreamsError

__all__ = ["EXIT_CHECK_FAILED", "EXIT_FAILED", "emit_json", "fail_cleanly", "say", "table"]

EXIT_FAILED = 1
EXIT_CHECK_FAILED = 3

P = ParamSpec("P")
R = TypeVar("R")


def say(message: str = "", *, err: bool = False) -> None:
    click.echo(message, err=err)


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


def fail_cleanly(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a StreamsError into `error: ...` / `hint: ...` on stderr and exit code 1.

    A ``RefusedError`` (a safety rule said no; nothing was changed) prints `refused: ...` and
    exits 3.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except StreamsError as error:
            refused = isinstance(error, RefusedError)
            click.echo(f"{'refused' if refused else 'error'}: {error.message}", err=True)
            if error.hint:
                click.echo(f"hint: {error.hint}", err=True)
            sys.exit(EXIT_CHECK_FAILED if refused else EXIT_FAILED)

    return wrapper
