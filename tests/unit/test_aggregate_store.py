"""The aggregate state stores (memory, RocksDB, SQLite): the same contract on each."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.aggregate.state import PartitionState, StateCodec
from streams.aggregate.store import Checkpoint, StoreKind, open_store
from streams.windows import Tumbling

KINDS: tuple[StoreKind, ...] = ("memory", "rocksdb", "sqlite")


@pytest.mark.parametrize("kind", KINDS)
def test_a_store_applies_batches_and_scans_in_key_order(kind: StoreKind, tmp_path: Path) -> None:
    store = open_store(kind, tmp_path)
    store.write({b"wb": b"2", b"wa": b"1", b"wc": b"3", b"m": b"x"})
    store.write({b"wb": None, b"wd": b"4"})
    assert store.get(b"wa") == b"1"
    assert store.get(b"wb") is None
    assert list(store.scan(b"w", b"wd")) == [(b"wa", b"1"), (b"wc", b"3")]
    assert store.count() >= 4
    store.wipe()
    assert store.get(b"wa") is None
    store.close()


@pytest.mark.parametrize("kind", ["rocksdb", "sqlite"])
def test_a_disk_store_keeps_its_state_and_checkpoint_across_reopening(
    kind: StoreKind, tmp_path: Path
) -> None:
    store = open_store(kind, tmp_path)
    state = PartitionState(0, store, window=Tumbling(10), codec=StateCodec(), initial=int)
    windows, _ = state.place(5_000)
    state.fold(b"k", windows, lambda total, n: total + n, 7)
    state.observe(5_000)
    state.commit(dict(state.changes()))
    store.set_checkpoint(Checkpoint(42, 1_000))
    store.close()
    again = open_store(kind, tmp_path)
    checkpoint = again.checkpoint()
    assert checkpoint is not None
    assert (checkpoint.offset, checkpoint.written_ms) == (42, 1_000)
    restored = PartitionState(0, again, window=Tumbling(10), codec=StateCodec(), initial=int)
    assert restored.watermark.max_event_ms == 5_000
    assert restored.current(next(k for k, _ in again.scan(b"w", b"x"))) == 7
    again.set_checkpoint(None)
    assert again.checkpoint() is None
    again.close()


def test_the_memory_store_is_never_checkpointed(tmp_path: Path) -> None:
    store = open_store("memory", tmp_path)
    store.set_checkpoint(Checkpoint(1, 1))
    assert store.checkpoint() is None
    assert not store.persistent
