"""Where an aggregate keeps one partition's state: in memory, in RocksDB, or in SQLite.

Every store maps bytes to bytes, applies a batch of changes atomically, and iterates a key
range in key order (windows are closed by scanning their keys, which sort by window end).
The changelog topic is the state's record of truth; a local store is a cache of it:

- the memory store holds everything in a dict and starts empty (a full restore every time);
- the disk stores (``rocksdb``, the default, and ``sqlite``) survive a clean stop: the worker
  writes a *checkpoint* (the changelog's end offset after its last commit) when it gives a
  partition up, and replays only the changelog past it when it gets the partition back. A store
  without a checkpoint (after a crash) is wiped and restored whole. Writes skip the WAL and
  fsync for that reason: a crash never leaves a store that is used as it is.

RocksDB holds memory to its write buffers and block cache (``_ROCKS_*`` below), so state far
larger than memory works; ``bench/aggregate.py`` measures the RSS of a million keys in each.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import struct
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

__all__ = [
    "Checkpoint",
    "MemoryStore",
    "RocksStore",
    "SqliteStore",
    "Store",
    "StoreKind",
    "open_store",
]

StoreKind = Literal["memory", "rocksdb", "sqlite"]

# RocksDB memory: 2 memtables of 4 MiB per partition, and one 16 MiB block cache (index and
# filter blocks in it) shared by every partition of the process: a worker of 4 partitions
# holds about 50 MiB of RocksDB memory whatever the state's size on disk. With 8 MiB memtables
# and a cache per partition a million-key restore peaked at 136-158 MiB RSS
# (bench/results/aggregate-20261202T010541Z.json).
_ROCKS_WRITE_BUFFER = 4 * 1024 * 1024
_ROCKS_BLOCK_CACHE = 16 * 1024 * 1024
_SHARED_CACHE: list[Any] = []  # the one block cache of this process, made on first use
# SQLite page cache per partition store (negative: KiB).
_SQLITE_CACHE_KIB = 8 * 1024
# Meta keys sort before every state key (those start with b"w" or b"m").
_CHECKPOINT_KEY = b"\x00checkpoint"
_CHECKPOINT = struct.Struct(">qq")  # changelog end offset, written at (epoch ms)


class Checkpoint:
    """The changelog end offset a store was in step with when its worker gave it up."""

    __slots__ = ("offset", "written_ms")

    def __init__(self, offset: int, written_ms: int) -> None:
        self.offset = offset
        self.written_ms = written_ms

    def encode(self) -> bytes:
        return _CHECKPOINT.pack(self.offset, self.written_ms)

    @classmethod
    def decode(cls, data: bytes | None) -> Checkpoint | None:
        if data is None or len(data) != _CHECKPOINT.size:
            return None
        offset, written = _CHECKPOINT.unpack(data)
        return cls(offset, written)


class Store(Protocol):
    """One partition's state: bytes to bytes, batches applied atomically, ranges in order."""

    persistent: bool

    def get(self, key: bytes) -> bytes | None: ...

    def write(self, changes: Mapping[bytes, bytes | None]) -> None:
        """Apply ``changes`` at once (None deletes the key)."""
        ...

    def scan(self, low: bytes, high: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) with ``low <= key < high``, in key order."""
        ...

    def count(self) -> int:
        """The number of keys (an estimate for RocksDB)."""
        ...

    def checkpoint(self) -> Checkpoint | None: ...

    def set_checkpoint(self, checkpoint: Checkpoint | None) -> None: ...

    def wipe(self) -> None:
        """Delete everything (a store that is not in step with its changelog)."""
        ...

    def close(self) -> None: ...


class MemoryStore:
    """A dict; range scans sort the keys they find (stores of small state only)."""

    persistent = False

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def write(self, changes: Mapping[bytes, bytes | None]) -> None:
        data = self._data
        for key, value in changes.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value

    def scan(self, low: bytes, high: bytes) -> Iterator[tuple[bytes, bytes]]:
        found = sorted(k for k in self._data if low <= k < high)
        for key in found:
            yield key, self._data[key]

    def count(self) -> int:
        return len(self._data)

    def checkpoint(self) -> Checkpoint | None:
        return None

    def set_checkpoint(self, checkpoint: Checkpoint | None) -> None:
        del checkpoint  # nothing survives the process: a memory store always restores whole

    def wipe(self) -> None:
        self._data.clear()

    def close(self) -> None:
        self._data.clear()


class RocksStore:
    """RocksDB through rocksdict, one database per partition, memory bounded."""

    persistent = True

    def __init__(self, path: Path) -> None:
        from rocksdict import (  # noqa: PLC0415 - a native library, loaded for disk stores only
            BlockBasedOptions,
            Cache,
            Options,
            Rdict,
            WriteBatch,
            WriteOptions,
        )

        self._path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)  # noqa: FBT003 - the binding's API
        options.set_write_buffer_size(_ROCKS_WRITE_BUFFER)
        options.set_max_write_buffer_number(2)
        table = BlockBasedOptions()
        if not _SHARED_CACHE:
            _SHARED_CACHE.append(Cache(_ROCKS_BLOCK_CACHE))
        table.set_block_cache(_SHARED_CACHE[0])
        table.set_cache_index_and_filter_blocks(True)
        options.set_block_based_table_factory(table)
        self._options = options
        self._rdict = Rdict
        self._batch_type = WriteBatch
        self._writes = WriteOptions()
        # the changelog is the log; a crash wipes the store. (A property at run time; the
        # binding's stubs call it a method.)
        self._writes.disable_wal = True  # type: ignore[method-assign,assignment]
        self._db = self._open()

    def _open(self) -> Any:
        db = self._rdict(str(self._path), self._options)
        db.set_write_options(self._writes)
        return db

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db.get(key)
        return value

    def write(self, changes: Mapping[bytes, bytes | None]) -> None:
        batch = self._batch_type(raw_mode=True)
        for key, value in changes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self._db.write(batch)

    def scan(self, low: bytes, high: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self._db.items(from_key=low):
            if key >= high:
                return
            yield key, value

    def count(self) -> int:
        found = self._db.property_int_value("rocksdb.estimate-num-keys")
        return int(found or 0)

    def checkpoint(self) -> Checkpoint | None:
        return Checkpoint.decode(self._db.get(_CHECKPOINT_KEY))

    def set_checkpoint(self, checkpoint: Checkpoint | None) -> None:
        if checkpoint is None:
            self._db.delete(_CHECKPOINT_KEY)
        else:
            self._db.put(_CHECKPOINT_KEY, checkpoint.encode())
        self._db.flush()  # the memtables go to disk: the checkpoint must not outrun the state

    def wipe(self) -> None:
        self._db.close()
        self._rdict.destroy(str(self._path), self._options)
        self._db = self._open()

    def close(self) -> None:
        self._db.close()


class SqliteStore:
    """SQLite, one file per partition: a WITHOUT ROWID table sorted by key."""

    persistent = True

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        # no journal, no fsync: the changelog is the log and a crash wipes the store
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute(f"PRAGMA cache_size=-{_SQLITE_CACHE_KIB}")
        db.execute(
            "CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID"
        )
        return db

    def get(self, key: bytes) -> bytes | None:
        row = self._db.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def write(self, changes: Mapping[bytes, bytes | None]) -> None:
        puts = [(k, v) for k, v in changes.items() if v is not None]
        deletes = [(k,) for k, v in changes.items() if v is None]
        db = self._db
        db.execute("BEGIN")
        try:
            if puts:
                db.executemany("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", puts)
            if deletes:
                db.executemany("DELETE FROM kv WHERE k = ?", deletes)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def scan(self, low: bytes, high: bytes) -> Iterator[tuple[bytes, bytes]]:
        rows = self._db.execute(
            "SELECT k, v FROM kv WHERE k >= ? AND k < ? ORDER BY k", (low, high)
        ).fetchall()
        for key, value in rows:
            yield bytes(key), bytes(value)

    def count(self) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM kv WHERE k >= ?", (b"\x01",)).fetchone()
        return int(row[0])

    def checkpoint(self) -> Checkpoint | None:
        return Checkpoint.decode(self.get(_CHECKPOINT_KEY))

    def set_checkpoint(self, checkpoint: Checkpoint | None) -> None:
        self.write({_CHECKPOINT_KEY: None if checkpoint is None else checkpoint.encode()})

    def wipe(self) -> None:
        self._db.execute("DELETE FROM kv")

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()


def open_store(kind: StoreKind, directory: Path) -> Store:
    """The store of one partition in ``directory`` (unused for ``memory``)."""
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SqliteStore(directory / "state.sqlite")
    return RocksStore(directory / "rocksdb")


def remove_store(directory: Path) -> None:
    """Delete a partition's local store (its state lives on in the changelog)."""
    shutil.rmtree(directory, ignore_errors=True)


def now_ms() -> int:
    return time.time_ns() // 1_000_000
