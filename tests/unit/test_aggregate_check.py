"""The aggregate chaos checker on synthetic histories: it passes a right one and fails wrong ones
(the control that shows the chaos run's check can fail)."""

from __future__ import annotations

from tests.chaos.aggregate_check import Input, check, expected
from tests.chaos.aggregate_pipeline import WINDOW, event_ms, is_late, is_poison


def _history(count: int) -> tuple[list[Input], set[int]]:
    inputs = [Input(n, f"k{n % 9}", (n % 9) % 4) for n in range(count)]
    by_partition = sorted(inputs, key=lambda i: (i.partition, i.n))
    return by_partition, {n for n in range(count) if is_late(n)}


def test_the_recomputation_finds_exactly_the_planned_late_records() -> None:
    inputs, planned = _history(3000)
    want = expected(inputs, window=WINDOW, event_ms=event_ms, is_poison=is_poison)
    assert want.late == planned
    assert want.poison == {500, 1500, 2500}
    assert want.closed
    assert want.open  # the last windows stay open at the end


def _emitted(inputs: list[Input]) -> list[tuple[str, int, list[int]]]:
    want = expected(inputs, window=WINDOW, event_ms=event_ms, is_poison=is_poison)
    return [(key, start, value) for (key, start), value in want.closed.items()]


def test_a_faithful_run_passes_and_each_fault_is_caught() -> None:
    inputs, planned = _history(3000)
    want = expected(inputs, window=WINDOW, event_ms=event_ms, is_poison=is_poison)
    emitted = _emitted(inputs)
    dead = [(n, "late") for n in sorted(want.late)] + [(n, "dead-letter") for n in want.poison]
    assert check(want, emitted, dead, planned) == []

    duplicated = [*emitted, emitted[3]]
    assert {v.kind for v in check(want, duplicated, dead, planned)} == {"duplicate"}

    lost = emitted[1:]
    assert {v.kind for v in check(want, lost, dead, planned)} == {"window"}

    key, start, value = emitted[0]
    recounted = [(key, start, [value[0] + 1, value[1]]), *emitted[1:]]  # a record folded twice
    assert {v.kind for v in check(want, recounted, dead, planned)} == {"window"}

    not_late = dead[1:]
    assert {v.kind for v in check(want, emitted, not_late, planned)} == {"late"}
