"""The chaos checker catches each anomaly in a synthetic history (and passes a clean one)."""

from __future__ import annotations

import pytest

from tests.chaos.checker import History, Observed, check

KEYS = ["k0", "k1", "k2"]


def clean(count: int = 30, dead: tuple[int, ...] = (7,)) -> History:
    inputs = {n: KEYS[n % 3] for n in range(count)}
    outputs = []
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
        dead=list(dead),
        sink_rows=[o.n for o in outputs],
        concurrent=outputs[:10],
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
    history.dead.append(history.outputs[0].n)
    assert "both" in kinds(history)


def test_a_reordering_within_a_key_is_caught() -> None:
    history = clean()
    same_key = [i for i, o in enumerate(history.outputs) if o.key == "k1"]
    a, b = history.outputs[same_key[0]], history.outputs[same_key[1]]
    history.outputs[same_key[0]] = Observed(b.n, b.key, a.partition, a.offset)
    history.outputs[same_key[1]] = Observed(a.n, a.key, b.partition, b.offset)
    history.concurrent = []
    assert kinds(history) == {"order"}


def test_a_reordering_of_a_retried_record_is_allowed() -> None:
    history = clean()
    same_key = [i for i, o in enumerate(history.outputs) if o.key == "k1"]
    a, b = history.outputs[same_key[0]], history.outputs[same_key[1]]
    history.outputs[same_key[0]] = Observed(b.n, b.key, a.partition, a.offset)
    history.outputs[same_key[1]] = Observed(a.n, a.key, b.partition, b.offset)
    history.concurrent = []
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
