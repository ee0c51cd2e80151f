"""One partition's aggregate state (streams.aggregate.state) on a memory store: fold, lateness,
closing windows, commit and discard. The same behaviour on the disk stores is in
test_aggregate_store.py."""

from __future__ import annotations

from typing import Any

import pytest

from streams.aggregate.state import PartitionState, StateCodec
from streams.aggregate.store import MemoryStore, Store
from streams.windows import TABLE, Hopping, Tumbling, Window, WindowSpec


def _state(window: WindowSpec | None, store: Store | None = None) -> PartitionState:
    return PartitionState(
        0, store or MemoryStore(), window=window, codec=StateCodec(), initial=lambda: 0
    )


def _add(state: PartitionState, key: bytes, event_ms: int, amount: int) -> bool:
    """Fold ``amount`` in as the batch does; False if the record was late."""
    windows, _ = state.place(event_ms)
    if not windows:
        return False
    state.fold(key, windows, lambda total, n: total + n, amount)
    state.observe(event_ms)
    return True


def _commit(state: PartitionState) -> dict[bytes, bytes | None]:
    changes = dict(state.changes())
    state.commit(changes)
    return changes


def test_records_within_grace_fold_into_their_window_and_beyond_it_are_late() -> None:
    state = _state(Tumbling(1, grace_s=0.5))  # 1,000 ms windows, 500 ms of grace
    assert _add(state, b"k", 100, 1)
    assert _add(state, b"k", 1200, 1)  # watermark 700: window [0, 1000) still open
    assert _add(state, b"k", 900, 1)  # out of order, within grace: folds
    assert _add(state, b"k", 1600, 1)  # watermark 1100: [0, 1000) closes
    closed = state.close_due()
    assert [(c.key, c.window, c.value) for c in closed] == [(b"k", Window(0, 1000), 2)]
    assert not _add(state, b"k", 999, 1)  # its only window has closed: late
    assert _add(state, b"k", 1000, 1)  # the next window is open
    assert state.current(b"w" + bytes(16) + b"k") == 0  # a key never written starts at initial


def test_closing_emits_in_end_order_and_tombstones_the_window() -> None:
    state = _state(Tumbling(10))
    for key, at in ((b"b", 5_000), (b"a", 3_000), (b"a", 15_000)):
        _add(state, key, at, 1)
    _commit(state)
    _add(state, b"z", 40_000, 1)  # watermark 40 s: [0, 10) and [10, 20) close
    assert state.closing_due
    closed = state.close_due()
    assert [(c.key, c.window.start_ms) for c in closed] == [(b"a", 0), (b"b", 0), (b"a", 10_000)]
    changes = _commit(state)
    assert sum(1 for v in changes.values() if v is None) == 3  # tombstones for the changelog
    assert state.close_due() == []
    assert state.next_close == 50_000
    assert state.store.count() == 2  # window [40, 50) of z, and the watermark
    assert state.key_count() == 1  # what the stats report as state_keys: the watermark is no key


def test_a_table_never_closes_and_keeps_a_running_value() -> None:
    state = _state(None)
    for at in range(100):
        _add(state, b"k", at * 1000, 2)
    assert not state.closing_due
    assert state.close_due() == []
    _commit(state)
    assert state.current(b"w" + _table_bytes() + b"k") == 200


def test_key_count_is_the_keys_held_not_the_stores_entries() -> None:
    state = _state(None)
    assert state.key_count() == 0  # nothing folded: no watermark entry either
    for n, key in enumerate((b"a", b"b", b"c", b"a")):
        _add(state, key, n * 1000, 1)
    _commit(state)
    assert (state.store.count(), state.key_count()) == (4, 3)


def _table_bytes() -> bytes:
    from streams.aggregate.state import window_key  # noqa: PLC0415

    return window_key(TABLE, b"")[1:]


def test_hopping_folds_into_every_open_window_and_counts_the_closed_ones() -> None:
    state = _state(Hopping(30, 10, grace_s=0))
    assert _add(state, b"k", 45_000, 5)  # watermark 45 s
    windows, closed = state.place(25_000)  # in [0, 30), [10, 40) and [20, 50)
    assert closed == 2
    assert windows == [Window(20_000, 50_000)]


def test_discard_drops_the_open_transaction_and_keeps_the_committed_state() -> None:
    state = _state(Tumbling(10, grace_s=1))
    _add(state, b"k", 5_000, 1)
    _commit(state)
    _add(state, b"k", 6_000, 10)
    _add(state, b"k", 50_000, 1)  # would close [0, 10)
    state.discard()
    assert state.watermark.max_event_ms == 5_000
    windows, _ = state.place(7_000)
    state.fold(b"k", windows, lambda total, _record: total, None)
    assert state.current(next(iter(state.dirty))) == 1


def test_a_fold_that_raises_changes_nothing() -> None:
    state = _state(Hopping(20, 10))
    windows, _ = state.place(15_000)
    calls: list[Any] = []

    def fold(total: int, _record: object) -> int:
        calls.append(total)
        if len(calls) == 2:
            raise ValueError("bad record")
        return total + 1

    with pytest.raises(ValueError, match="bad record"):
        state.fold(b"k", windows, fold, None)
    assert state.dirty == {}


def test_the_watermark_is_committed_with_the_state_and_restored() -> None:
    store = MemoryStore()
    state = _state(Tumbling(10, grace_s=2), store)
    _add(state, b"k", 33_000, 1)
    _commit(state)
    again = _state(Tumbling(10, grace_s=2), store)
    assert again.watermark.value == 31_000
    assert again.next_close == 40_000
    assert not _add(again, b"k", 29_000, 1)  # [20, 30) closed before the restart


def test_state_codec_round_trips_json_and_models() -> None:
    from pydantic import BaseModel  # noqa: PLC0415

    class Totals(BaseModel):
        count: int
        cents: int

    assert StateCodec().decode(StateCodec().encode({"a": [1, 2]})) == {"a": [1, 2]}
    codec = StateCodec(Totals)
    assert codec.decode(codec.encode(Totals(count=1, cents=5))) == Totals(count=1, cents=5)
