"""The invariants of a chaos run, checked on a recorded history; testable on synthetic ones.

A history holds what the inputs were and what a fresh ``read_committed`` reader found after
the run (outputs with their partition, DLQ records, sink rows), what a second reader saw while
the faults were happening, and each output partition's last stable offset and high watermark.
``check`` returns every violation found, so a test can assert that the list is empty and print
it when it is not.

The invariants:

- **lost / duplicate / both**: every input is in the output or in a DLQ, once, not in both;
- **dead-letter**: the DLQs hold exactly the records planned to go there (``expected_dead``),
  each with the planned stage and reason: a good record wrongly dead-lettered is a violation,
  not "not lost";
- **key**: an output keeps its input's key; all records of one key are on one partition;
- **order**: with plain retries, (a) records of a key that were never retried keep their input
  order, and (b) a retried record comes after every never-retried record of its key that
  preceded it in the input (it left the main path only when it failed; what was ahead of it
  stays ahead). Records of its key that followed it may overtake it: that is the only order a
  plain retry gives up. With key-ordered retries (``retried`` empty) every record keeps order;
- **aborted-read**: a read_committed reader running during the faults saw only records of
  committed transactions, once each; and it did read records while the faults ran (a reader
  that read nothing proves nothing);
- **sink**: the database rows are exactly the unique outputs;
- **unfinished**: no transaction is left open (LSO = high watermark everywhere).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import pairwise

__all__ = ["Dead", "History", "Observed", "Violation", "check"]


@dataclass(frozen=True)
class Observed:
    """One record read from an output topic: its number, key, partition and offset."""

    n: int
    key: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Dead:
    """One record found in a stage's DLQ: its number, the stage and the reason header."""

    n: int
    stage: str
    reason: str


@dataclass
class History:
    inputs: dict[int, str]  # number -> key, as written
    outputs: list[Observed]  # the last stage's output, read after the run
    dead: list[Dead]  # what every stage's DLQ holds
    sink_rows: list[int]  # numbers found in the database
    # number -> (stage, reason): what the DLQs must hold, exactly
    expected_dead: dict[int, tuple[str, str]] = field(default_factory=dict)
    concurrent: list[Observed] = field(default_factory=list)  # read while faults happened
    # how many of ``concurrent`` were read between the first and the last fault (None: no
    # faults, nothing to require)
    concurrent_during_faults: int | None = None
    # DLQ records that are no numbered input (the infrastructure run feeds one oversized
    # record): (stage, reason) of each, and how many are planned (each must be "unroutable")
    foreign_dead: list[tuple[str, str]] = field(default_factory=list)
    expected_foreign: int = 0
    # records that went through a retry topic (their per-key order is not promised)
    retried: set[int] = field(default_factory=set)
    # (topic, partition) -> (last stable offset, high watermark) at the end
    offsets: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Violation:
    kind: str  # lost | duplicate | both | dead-letter | key | aborted-read | order | sink | ...
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


def _sample(values: object, limit: int = 10) -> str:
    items = sorted(values)  # type: ignore[call-overload]
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return f"{items[:limit]}{more}"


def check(history: History) -> list[Violation]:
    """Every violation of the history, one block of checks per invariant."""
    return [
        *_counts(history),
        *_dead_letters(history),
        *_keys(history),
        *_aborted_reads(history),
        *_order(history),
        *_sink(history),
        *_unfinished(history),
    ]


def _counts(history: History) -> list[Violation]:
    found: list[Violation] = []
    out = Counter(o.n for o in history.outputs)
    dead = Counter(d.n for d in history.dead)
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
    return found


def _dead_letters(history: History) -> list[Violation]:
    """The DLQs hold exactly the planned records, at the planned stage, for the planned reason."""
    found: list[Violation] = []
    actual = {d.n: (d.stage, d.reason) for d in history.dead}
    wrongly = set(actual) - set(history.expected_dead)
    if wrongly:
        found.append(
            Violation(
                "dead-letter",
                f"{len(wrongly)} good records were dead-lettered: {_sample(wrongly)} "
                f"(first: {actual[min(wrongly)]})",
            )
        )
    missing = set(history.expected_dead) - set(actual)
    if missing:
        found.append(
            Violation(
                "dead-letter", f"{len(missing)} planned dead letters missing: {_sample(missing)}"
            )
        )
    if len(history.foreign_dead) != history.expected_foreign:
        found.append(
            Violation(
                "dead-letter",
                f"{len(history.foreign_dead)} DLQ records that are no input, planned "
                f"{history.expected_foreign}: {history.foreign_dead[:5]}",
            )
        )
    not_unroutable = [d for d in history.foreign_dead if d[1] != "unroutable"]
    if not_unroutable:
        found.append(
            Violation("dead-letter", f"foreign DLQ records not unroutable: {not_unroutable[:5]}")
        )
    misfiled = {
        n for n in set(actual) & set(history.expected_dead) if actual[n] != history.expected_dead[n]
    }
    if misfiled:
        n = min(misfiled)
        found.append(
            Violation(
                "dead-letter",
                f"{len(misfiled)} dead letters at the wrong stage or with the wrong reason: "
                f"{n} is {actual[n]}, planned {history.expected_dead[n]}",
            )
        )
    return found


def _keys(history: History) -> list[Violation]:
    found: list[Violation] = []
    rekeyed = {
        o.n for o in history.outputs if o.n in history.inputs and o.key != history.inputs[o.n]
    }
    if rekeyed:
        found.append(
            Violation("key", f"{len(rekeyed)} outputs lost their input key: {_sample(rekeyed)}")
        )
    partitions: dict[str, set[int]] = defaultdict(set)
    for o in history.outputs:
        partitions[o.key].add(o.partition)
    for key, seen in sorted(partitions.items()):
        if len(seen) > 1:
            found.append(Violation("key", f"key {key} was written to partitions {sorted(seen)}"))
    return found


def _aborted_reads(history: History) -> list[Violation]:
    # A read_committed reader never sees a record of an aborted transaction: what the concurrent
    # reader saw must be in the final output, once, at the same place.
    found: list[Violation] = []
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
    if not history.concurrent:
        found.append(Violation("aborted-read", "the concurrent reader read nothing: no check"))
    elif history.concurrent_during_faults == 0:
        found.append(
            Violation("aborted-read", "the concurrent reader read nothing while the faults ran")
        )
    return found


def _order(history: History) -> list[Violation]:
    """Per-key order as the module docstring states it (rule (b) only applies to retried ones)."""
    found: list[Violation] = []
    by_key: dict[str, list[Observed]] = defaultdict(list)
    for o in sorted(history.outputs, key=lambda o: (o.partition, o.offset)):
        by_key[o.key].append(o)
    for key, records in sorted(by_key.items()):
        steady = [o.n for o in records if o.n not in history.retried]
        if steady != sorted(steady):
            bad = next(b for a, b in pairwise(steady) if b < a)
            found.append(Violation("order", f"key {key}: {bad} came after a later record"))
        # (b): a retried record after every never-retried record of its key that preceded it
        overtaken = _retried_before_earlier(records, history.retried)
        if overtaken is not None:
            found.append(
                Violation(
                    "order",
                    f"key {key}: retried record {overtaken[0]} came before {overtaken[1]}, "
                    "which preceded it in the input and was never retried",
                )
            )
    return found


def _retried_before_earlier(records: list[Observed], retried: set[int]) -> tuple[int, int] | None:
    """A retried record output before a never-retried record of its key that preceded it."""
    retried_so_far: list[int] = []
    for o in records:
        if o.n in retried:
            retried_so_far.append(o.n)
            continue
        ahead = [r for r in retried_so_far if r > o.n]
        if ahead:
            return min(ahead), o.n
    return None


def _sink(history: History) -> list[Violation]:
    out = Counter(o.n for o in history.outputs)
    rows = Counter(history.sink_rows)
    if rows == Counter(set(out)):
        return []
    extra = {n for n, c in rows.items() if c > out.get(n, 0) or c > 1}
    missing = set(out) - set(rows)
    return [
        Violation(
            "sink",
            f"rows differ from unique outputs: missing {_sample(missing)}, "
            f"extra or doubled {_sample(extra)}",
        )
    ]


def _unfinished(history: History) -> list[Violation]:
    unfinished = {tp: v for tp, v in history.offsets.items() if v[0] != v[1]}
    if unfinished:
        return [
            Violation("unfinished", f"last stable offset below the high watermark: {unfinished}")
        ]
    return []
