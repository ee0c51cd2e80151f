"""The invariants of a chaos run, checked on a recorded history; testable on synthetic ones.

A history holds what the inputs were and what a fresh ``read_committed`` reader found after
the run (outputs with their partition, DLQ records, sink rows), what a second reader saw while
the faults were happening, and each output partition's last stable offset and high watermark.
``check`` returns every violation found, so a test can assert that the list is empty and print
it when it is not.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import pairwise

__all__ = ["History", "Observed", "Violation", "check"]


@dataclass(frozen=True)
class Observed:
    """One record read from an output topic: its number, key, partition and offset."""

    n: int
    key: str
    partition: int
    offset: int


@dataclass
class History:
    inputs: dict[int, str]  # number -> key, as written
    outputs: list[Observed]  # the last stage's output, read after the run
    dead: list[int]  # numbers found in any stage's DLQ
    sink_rows: list[int]  # numbers found in the database
    concurrent: list[Observed] = field(default_factory=list)  # read while faults happened
    # records that went through a retry topic (their per-key order is not promised)
    retried: set[int] = field(default_factory=set)
    # (topic, partition) -> (last stable offset, high watermark) at the end
    offsets: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Violation:
    kind: str  # lost | duplicate | both | aborted-read | order | sink | unfinished
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


def _sample(values: object, limit: int = 10) -> str:
    items = sorted(values)  # type: ignore[call-overload]
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return f"{items[:limit]}{more}"


def check(history: History) -> list[Violation]:  # noqa: C901, PLR0912 - a block per invariant
    found: list[Violation] = []
    out = Counter(o.n for o in history.outputs)
    dead = Counter(history.dead)
    expected = set(history.inputs)

    lost = expected - set(out) - set(dead)
    if lost:
        found.append(
            Violation("lost", f"{len(lost)} inputs in neither output nor DLQ: {_sample(lost)}")
        )
    for name, counts in (("output", out), ("DLQ", dead)):
        doubled = {n for n, c in counts.items() if c > 1}
        if doubled:
            found.append(
                Violation("duplicate", f"{len(doubled)} twice in the {name}: {_sample(doubled)}")
            )
    both = set(out) & set(dead)
    if both:
        found.append(Violation("both", f"{len(both)} in the output and the DLQ: {_sample(both)}"))
    unknown = (set(out) | set(dead)) - expected
    if unknown:
        found.append(
            Violation("duplicate", f"{len(unknown)} outputs no input explains: {_sample(unknown)}")
        )

    # A read_committed reader never sees a record of an aborted transaction: what the concurrent
    # reader saw must be in the final output, once, at the same place.
    final = {(o.partition, o.offset): o.n for o in history.outputs}
    seen_twice = {n for n, c in Counter(o.n for o in history.concurrent).items() if c > 1}
    if seen_twice:
        found.append(
            Violation("aborted-read", f"the concurrent reader saw {_sample(seen_twice)} twice")
        )
    phantom = [o for o in history.concurrent if final.get((o.partition, o.offset)) != o.n]
    if phantom:
        found.append(
            Violation(
                "aborted-read",
                f"{len(phantom)} records read during the run are not in the final output "
                f"at that place: {_sample({o.n for o in phantom})}",
            )
        )

    # Per-key order: records of one key that never went through a retry topic keep input order.
    by_key: dict[str, list[Observed]] = defaultdict(list)
    for o in sorted(history.outputs, key=lambda o: (o.partition, o.offset)):
        if o.n not in history.retried:
            by_key[o.key].append(o)
    for key, records in by_key.items():
        numbers = [o.n for o in records]
        if numbers != sorted(numbers):
            bad = next(b for a, b in pairwise(numbers) if b < a)
            found.append(Violation("order", f"key {key}: {bad} came after a later record"))
        if len({o.partition for o in records}) > 1:
            found.append(Violation("order", f"key {key} was written to several partitions"))

    rows = Counter(history.sink_rows)
    if rows != Counter(set(out)):
        extra = {n for n, c in rows.items() if c > out.get(n, 0) or c > 1}
        missing = set(out) - set(rows)
        found.append(
            Violation(
                "sink",
                f"rows differ from unique outputs: missing {_sample(missing)}, "
                f"extra or doubled {_sample(extra)}",
            )
        )

    unfinished = {tp: v for tp, v in history.offsets.items() if v[0] != v[1]}
    if unfinished:
        found.append(
            Violation("unfinished", f"last stable offset below the high watermark: {unfinished}")
        )
    return found
