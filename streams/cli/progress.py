"""Progress of long replay work on stderr: a bar with rate and ETA, or a line every 5 s.

On a terminal it is a ``rich`` bar (records done of total, records per second, time left).
Elsewhere (a pipe, a log file, CI) it prints one plain line every 5 s and one at the end, so
that logs show how a long redrive went without a line per record.
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichBar
from rich.progress import Task as RichTask
from rich.text import Text

from streams.cli.output import say

__all__ = ["progress_for"]

_LINE_INTERVAL_S = 5.0


class _Rate(ProgressColumn):
    def render(self, task: RichTask) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-" if speed is None else f"{speed:,.0f} rec/s")


class BarProgress:
    """A rich progress bar on stderr (a terminal)."""

    def __init__(self) -> None:
        self._bar: RichBar | None = None
        self._task: TaskID | None = None

    def start(self, description: str, total: int | None, done: int = 0) -> None:
        self.finish()
        self._bar = RichBar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            _Rate(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, completed=done)

    def advance(self, count: int) -> None:
        if self._bar is not None and self._task is not None and count:
            self._bar.advance(self._task, count)

    def finish(self) -> None:
        if self._bar is not None and self._task is not None:
            # totals are offsets (transaction markers included): done is done
            self._bar.update(self._task, total=self._bar.tasks[0].completed)
            self._bar.stop()
        self._bar = None
        self._task = None


class LineProgress:
    """One plain line every 5 s, and one at the end (not a terminal); work shorter than 5 s
    prints nothing, so that short commands in scripts stay quiet."""

    def __init__(self) -> None:
        self._description = ""
        self._total: int | None = None
        self._done = 0
        self._began = 0.0
        self._start_done = 0
        self._last = 0.0
        self._active = False
        self._said = False

    def start(self, description: str, total: int | None, done: int = 0) -> None:
        self.finish()
        self._description, self._total, self._done = description, total, done
        self._start_done = done
        self._began = self._last = time.monotonic()
        self._active = True
        self._said = False

    def advance(self, count: int) -> None:
        self._done += count
        if time.monotonic() - self._last >= _LINE_INTERVAL_S:
            self._say()
            self._said = True
            self._last = time.monotonic()

    def finish(self) -> None:
        if self._active and self._said:
            self._say(final=True)
        self._active = False

    def _say(self, *, final: bool = False) -> None:
        elapsed = max(time.monotonic() - self._began, 1e-9)
        rate = (self._done - self._start_done) / elapsed
        line = f"{self._description}: {self._done:,}"
        if final:
            line += f" done in {elapsed:.1f} s"
        elif self._total:
            line += f"/{self._total:,} ({100 * self._done / self._total:.0f} %)"
            left = self._total - self._done
            if rate > 0 and left > 0:
                line += f", {left / rate:.0f} s left"
        say(f"{line}, {rate:,.0f} rec/s", err=True)


def progress_for(*, quiet: bool = False) -> BarProgress | LineProgress | None:
    """The progress display for this process: a bar on a terminal, lines elsewhere."""
    if quiet:
        return None
    return BarProgress() if sys.stderr.isatty() else LineProgress()
