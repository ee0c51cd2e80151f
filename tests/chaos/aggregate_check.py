"""The invariants of an aggregate chaos run, checked against an offline recomputation.

``expected`` replays the input as the stage must have seen it: per partition, in offset order,
the watermark (largest event time minus grace), each record's window, late records (their
window closed) and poison records (the fold raises). It gives the final value of every window
that closed by the end, the windows still open, and the late and dead-lettered records.
``check`` compares the stage's output and DLQ with it:

- **window**: every closed window was emitted once, with exactly the recomputed value; no
  window was emitted that should not have been (or not yet);
- **duplicate**: no window was emitted twice;
- **late**: the DLQ's ``late`` records are exactly the records the recomputation finds late,
  and those are exactly the records the test made late (``planned_late``);
- **dead-letter**: the DLQ holds the poison records with reason ``dead-letter``, nothing else.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from streams.windows import Watermark, WindowSpec

__all__ = ["Expected", "Input", "Violation", "check", "expected"]


@dataclass(frozen=True)
class Input:
    n: int
    key: str
    partition: int


@dataclass(frozen=True)
class Violation:
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass
class Expected:
    closed: dict[tuple[str, int], list[int]] = field(default_factory=dict)  # (key, start)
    open: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    late: set[int] = field(default_factory=set)
    poison: set[int] = field(default_factory=set)


def expected(
    inputs: Iterable[Input],
    *,
    window: WindowSpec,
    event_ms: Callable[[int], int],
    is_poison: Callable[[int], bool],
) -> Expected:
    """Replay ``inputs`` (in offset order per partition) as the aggregate must."""
    result = Expected()
    marks: dict[int, Watermark] = {}
    windows: dict[int, dict[tuple[str, int, int], list[int]]] = {}
    for record in inputs:
        mark = marks.setdefault(record.partition, Watermark(window.grace_ms))
        state = windows.setdefault(record.partition, {})
        at = event_ms(record.n)
        (win,) = window.windows(at)
        if mark.value >= win.end_ms:
            result.late.add(record.n)
            continue
        if is_poison(record.n):
            result.poison.add(record.n)
            mark.observe(at)
            continue
        total = state.setdefault((record.key, win.start_ms, win.end_ms), [0, 0])
        total[0] += 1
        total[1] += record.n
        mark.observe(at)
    for partition, state in windows.items():
        watermark = marks[partition].value
        for (key, start, end), total in state.items():
            target = result.closed if watermark >= end else result.open
            target[(key, start)] = total
    return result


def check(
    want: Expected,
    emitted: list[tuple[str, int, list[int]]],
    dead: list[tuple[int, str]],
    planned_late: set[int],
) -> list[Violation]:
    """``emitted``: (key, window start, value) as read; ``dead``: (n, reason) from the DLQ."""
    found: list[Violation] = []
    counts = Counter((key, start) for key, start, _ in emitted)
    twice = sorted(k for k, c in counts.items() if c > 1)
    if twice:
        found.append(Violation("duplicate", f"{len(twice)} windows emitted twice: {twice[:5]}"))
    got = {(key, start): value for key, start, value in emitted}
    missing = sorted(set(want.closed) - set(got))
    if missing:
        found.append(Violation("window", f"{len(missing)} closed windows missing: {missing[:5]}"))
    extra = sorted(set(got) - set(want.closed))
    if extra:
        found.append(Violation("window", f"{len(extra)} windows not due emitted: {extra[:5]}"))
    wrong = sorted(k for k in set(got) & set(want.closed) if got[k] != want.closed[k])
    if wrong:
        first = wrong[0]
        found.append(
            Violation(
                "window",
                f"{len(wrong)} windows with a wrong value, first {first}: "
                f"{got[first]} != {want.closed[first]}",
            )
        )
    late = {n for n, reason in dead if reason == "late"}
    if late != want.late:
        found.append(
            Violation(
                "late",
                f"DLQ late records differ from the recomputation: {sorted(late ^ want.late)[:10]}",
            )
        )
    if want.late != planned_late:
        found.append(
            Violation(
                "late", f"late records not as planned: {sorted(want.late ^ planned_late)[:10]}"
            )
        )
    poison = [(n, reason) for n, reason in dead if reason != "late"]
    if sorted(poison) != sorted((n, "dead-letter") for n in want.poison):
        found.append(Violation("dead-letter", f"DLQ non-late records: {sorted(poison)[:10]}"))
    return found
