"""Windows of an aggregate: which windows an event time falls in, the watermark, lateness.

Pure: no broker, no clock. Times are milliseconds since the epoch (event time).

======================  ==========================================================
``Tumbling(size, g)``   windows ``[k*size, (k+1)*size)``: each time is in exactly one
``Hopping(size, s, g)`` windows ``[k*s, k*s + size)``: each time is in ``size / s`` of them
no window (``None``)    one running value per key (``TABLE``, which never closes)
======================  ==========================================================

The **watermark** of a partition is the largest event time seen there minus the grace.
A window ``[start, end)`` **closes** once the watermark reaches ``end``: its final value is
emitted and its state deleted. A record none of whose windows is open any more is **late**.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.exceptions import TopologyError

__all__ = ["MAX_TIME_MS", "TABLE", "Hopping", "Tumbling", "Watermark", "Window", "WindowSpec"]

# The end of the one "window" of a running table: no watermark ever reaches it.
MAX_TIME_MS = 2**63 - 1
_NO_WATERMARK = -(2**63)


@dataclass(frozen=True, slots=True, order=True)
class Window:
    """``[start_ms, end_ms)`` in event time."""

    start_ms: int
    end_ms: int

    def closed_by(self, watermark_ms: int) -> bool:
        return watermark_ms >= self.end_ms


TABLE = Window(0, MAX_TIME_MS)


def _ms(seconds: float, what: str, *, positive: bool) -> int:
    value = round(seconds * 1000)
    if value < 0 or (positive and value == 0):
        raise TopologyError(
            f"window {what} must be {'positive' if positive else 'zero or more'}, got {seconds} s"
        )
    return value


@dataclass(frozen=True)
class Tumbling:
    """Fixed, adjacent windows of ``size_s`` seconds; records up to ``grace_s`` late still fold."""

    size_s: float
    grace_s: float = 0.0

    def __post_init__(self) -> None:
        _ms(self.size_s, "size", positive=True)
        _ms(self.grace_s, "grace", positive=False)

    @property
    def grace_ms(self) -> int:
        return round(self.grace_s * 1000)

    def windows(self, event_ms: int) -> list[Window]:
        size = round(self.size_s * 1000)
        start = event_ms - event_ms % size
        return [Window(start, start + size)]


@dataclass(frozen=True)
class Hopping:
    """Windows of ``size_s`` seconds starting every ``step_s`` seconds (they overlap)."""

    size_s: float
    step_s: float
    grace_s: float = 0.0

    def __post_init__(self) -> None:
        size = _ms(self.size_s, "size", positive=True)
        step = _ms(self.step_s, "step", positive=True)
        _ms(self.grace_s, "grace", positive=False)
        if step > size:
            raise TopologyError(
                f"a hopping window's step ({self.step_s} s) is longer than its size "
                f"({self.size_s} s): records between windows would belong to none",
                hint="use a step at most the size (equal: a tumbling window)",
            )

    @property
    def grace_ms(self) -> int:
        return round(self.grace_s * 1000)

    def windows(self, event_ms: int) -> list[Window]:
        size = round(self.size_s * 1000)
        step = round(self.step_s * 1000)
        last = event_ms - event_ms % step  # the latest window start at or before the event
        found = []
        start = last
        while start > event_ms - size:
            found.append(Window(start, start + size))
            start -= step
        found.reverse()
        return found


WindowSpec = Tumbling | Hopping


def windows_of(spec: WindowSpec | None, event_ms: int) -> list[Window]:
    """The windows ``event_ms`` belongs to (``[TABLE]`` without a window)."""
    return [TABLE] if spec is None else spec.windows(event_ms)


class Watermark:
    """The watermark of one partition: the largest event time seen, minus the grace."""

    __slots__ = ("grace_ms", "max_event_ms")

    def __init__(self, grace_ms: int, max_event_ms: int | None = None) -> None:
        self.grace_ms = grace_ms
        self.max_event_ms = max_event_ms

    @property
    def value(self) -> int:
        """The watermark in ms (very negative before any record)."""
        if self.max_event_ms is None:
            return _NO_WATERMARK
        return self.max_event_ms - self.grace_ms

    def observe(self, event_ms: int) -> bool:
        """Note a record's event time; True if the watermark moved."""
        if self.max_event_ms is None or event_ms > self.max_event_ms:
            self.max_event_ms = event_ms
            return True
        return False
