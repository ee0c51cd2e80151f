"""The chaos checker catches each anomaly in a synthetic history (and passes a clean one)."""

from __future__ import annotations

import pytest

from tests.chaos.checker import Dead, History, Observed, check

KEYS = ["k0", "k1", "k2"]


def clean(count: int = 30, dead: tuple[int, ...] = (7,)) -> History:
    inputs = {n: KEYS[n % 3] for n in range(count)}
    outputs = []
    # keys map to partitions, as Kafka's partitioner does
    offsets = {0: 0, 1: 0, 2: 0}
    for n in range(count):
        if n in dead:
            continue
        partition = n % 3
        outputs.append(Observed(n, inputs[n], partition, offsets[partition]))
        offsets[partition] += 1
    return History(
        inputs=inputs,
        outputs=outputs,
        dead=[Dead(n, "b", "dead-letter") for n in dead],
        expected_dead=dict.fromkeys(dead, ("b", "dead-letter")),
        sink_rows=[o.n for o in outputs],
        concurrent=outputs[:10],
        concurrent_during_faults=5,
        offsets={("out", p): (o, o) for p, o in offsets.items()},
    )


def kinds(history: History) -> set[str]:
    return {v.kind for v in check(history)}


def test_a_clean_history_passes() -> None:
    assert check(clean()) == []


def test_a_lost_record_is_caught() -> None:
    history = clean()
    history.outputs = [o for o in history.outputs if o.n != 12]
    history.sink_rows = [o.n for o in history.outputs]
    assert kinds(history) == {"lost"}
    assert "[12]" in str(check(history)[0])


def test_a_duplicate_output_is_caught() -> None:
    history = clean()
    extra = history.outputs[4]
    history.outputs.append(Observed(extra.n, extra.key, extra.partition, 99))
    assert "duplicate" in kinds(history)


def test_a_record_both_output_and_dead_lettered_is_caught() -> None:
    history = clean()
    history.dead.append(Dead(history.outputs[0].n, "b", "dead-letter"))
    assert "both" in kinds(history)


def test_a_reordering_within_a_key_is_caught() -> None:
    history = clean()
    same_key = [i for i, o in enumerate(history.outputs) if o.key == "k1"]
    a, b = history.outputs[same_key[0]], history.outputs[same_key[1]]
    history.outputs[same_key[0]] = Observed(b.n, b.key, a.partition, a.offset)
    history.outputs[same_key[1]] = Observed(a.n, a.key, b.partition, b.offset)
    history.concurrent = [o for o in history.concurrent if o.key != "k1"]  # not swapped
    assert kinds(history) == {"order"}


def test_a_reordering_of_a_retried_record_is_allowed() -> None:
    history = clean()
    same_key = [i for i, o in enumerate(history.outputs) if o.key == "k1"]
    a, b = history.outputs[same_key[0]], history.outputs[same_key[1]]
    history.outputs[same_key[0]] = Observed(b.n, b.key, a.partition, a.offset)
    history.outputs[same_key[1]] = Observed(a.n, a.key, b.partition, b.offset)
    history.concurrent = [o for o in history.concurrent if o.key != "k1"]  # not swapped
    history.retried = {a.n}
    assert check(history) == []


def test_an_aborted_read_is_caught() -> None:
    history = clean()
    # the concurrent reader saw a record at an offset the final output holds something else at
    ghost = history.outputs[3]
    history.concurrent.append(Observed(999, ghost.key, ghost.partition, ghost.offset))
    assert kinds(history) == {"aborted-read"}


def test_a_record_seen_twice_while_running_is_caught() -> None:
    history = clean()
    history.concurrent.append(history.concurrent[0])
    assert "aborted-read" in kinds(history)


@pytest.mark.parametrize("change", ["missing", "doubled"])
def test_sink_rows_must_equal_the_unique_outputs(change: str) -> None:
    history = clean()
    if change == "missing":
        history.sink_rows.pop()
    else:
        history.sink_rows.append(history.sink_rows[0])
    assert kinds(history) == {"sink"}


def test_an_open_transaction_at_the_end_is_caught() -> None:
    history = clean()
    history.offsets[("out", 1)] = (5, 9)
    assert kinds(history) == {"unfinished"}


def test_an_output_no_input_explains_is_caught() -> None:
    history = clean()
    history.outputs.append(Observed(5000, "k0", 0, 500))
    history.sink_rows.append(5000)
    assert "duplicate" in kinds(history)


def test_a_good_record_wrongly_dead_lettered_is_caught() -> None:
    """The hole that let it pass before: 'lost' only counted inputs in neither place."""
    history = clean()
    wrong = history.outputs.pop(5)
    history.dead.append(Dead(wrong.n, "c", "handler"))
    history.sink_rows = [o.n for o in history.outputs]
    history.concurrent = [o for o in history.concurrent if o.n != wrong.n]
    found = check(history)
    assert {v.kind for v in found} == {"dead-letter"}
    assert f"[{wrong.n}]" in str(found[0])


def test_a_planned_dead_letter_that_is_missing_or_misfiled_is_caught() -> None:
    missing = clean()
    missing.dead = []
    missing.outputs.append(Observed(7, "k1", 1, 99))  # processed instead of dead-lettered
    missing.sink_rows.append(7)
    assert "dead-letter" in kinds(missing)
    misfiled = clean()
    misfiled.dead = [Dead(7, "b", "retries-exhausted")]
    assert kinds(misfiled) == {"dead-letter"}


def test_a_duplicate_in_the_dlq_is_caught() -> None:
    history = clean()
    history.dead.append(Dead(7, "b", "dead-letter"))
    assert kinds(history) == {"duplicate"}


def test_a_key_on_two_partitions_is_caught() -> None:
    history = clean()
    moved = history.outputs[4]
    history.outputs[4] = Observed(moved.n, moved.key, (moved.partition + 1) % 3, 500)
    history.concurrent = [o for o in history.concurrent if o.n != moved.n]
    found = check(history)
    # read by partition, the moved record is also out of order: both are reported
    assert {v.kind for v in found} == {"key", "order"}
    assert any(f"key {moved.key} was written to partitions" in str(v) for v in found)


def test_an_output_that_lost_its_input_key_is_caught() -> None:
    history = clean()
    first = history.outputs[0]
    history.outputs[0] = Observed(first.n, "k-other", first.partition, first.offset)
    assert kinds(history) == {"key"}


def test_a_retried_record_before_an_earlier_never_retried_record_of_its_key_is_caught() -> None:
    """Plain retries let later records overtake a retried one, never the reverse."""
    history = clean()
    same_key = [i for i, o in enumerate(history.outputs) if o.key == "k1"]
    a, b = history.outputs[same_key[0]], history.outputs[same_key[1]]
    # b (later in the input, retried) is output before a (earlier, never retried)
    history.outputs[same_key[0]] = Observed(b.n, b.key, a.partition, a.offset)
    history.outputs[same_key[1]] = Observed(a.n, a.key, b.partition, b.offset)
    history.concurrent = [o for o in history.concurrent if o.key != "k1"]  # not swapped
    history.retried = {b.n}
    found = check(history)
    assert {v.kind for v in found} == {"order"}
    assert "retried record" in str(found[0])


def test_a_concurrent_reader_that_read_nothing_proves_nothing() -> None:
    empty = clean()
    empty.concurrent = []
    assert kinds(empty) == {"aborted-read"}
    idle = clean()
    idle.concurrent_during_faults = 0
    assert kinds(idle) == {"aborted-read"}
