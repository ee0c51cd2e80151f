"""One partition's aggregate state: fold, watermark, closing windows. Pure but for its store.

Every change of the open transaction waits in ``dirty`` (decoded, so that a key folded a
thousand times in one batch is decoded once and written to the changelog once); ``commit``
applies them to the store after the Kafka transaction committed, ``discard`` drops them after
an abort. Readers look in ``dirty`` first, then in the store.

Keys, in the store and in the changelog alike (both sort the same way)::

    b"w" + (window end + 2**63 as 8 bytes) + (window start + 2**63 as 8 bytes) + key bytes
    b"m"                                      the partition's largest event time (8 bytes)

so the windows that close first come first, and closing is a range scan.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from streams.aggregate.store import Store
from streams.windows import MAX_TIME_MS, Watermark, Window, WindowSpec, windows_of

__all__ = ["Closed", "PartitionState", "StateCodec", "window_key"]

_BIAS = 2**63
_WINDOW = struct.Struct(">QQ")
_TIME = struct.Struct(">q")
_PREFIX = b"w"
_WATERMARK_KEY = b"m"
_AFTER_WINDOWS = b"x"  # sorts after every window key
_DELETED: Any = object()  # a dirty key whose window closed: a tombstone at commit
_MISSING: Any = object()


def window_key(window: Window, key: bytes) -> bytes:
    return _PREFIX + _WINDOW.pack(window.end_ms + _BIAS, window.start_ms + _BIAS) + key


def split_key(stored: bytes) -> tuple[Window, bytes]:
    end, start = _WINDOW.unpack_from(stored, 1)
    return Window(start - _BIAS, end - _BIAS), stored[1 + _WINDOW.size :]


def _end_bound(watermark_ms: int) -> bytes:
    """The first window key whose window is still open at ``watermark_ms``."""
    return _PREFIX + _WINDOW.pack(min(watermark_ms, MAX_TIME_MS - 1) + 1 + _BIAS, 0)


class StateCodec:
    """Accumulators to bytes and back: JSON, or a pydantic model's JSON."""

    def __init__(self, model: type[BaseModel] | None = None) -> None:
        self.model = model

    def encode(self, value: Any) -> bytes:
        if self.model is not None:
            return bytes(value.model_dump_json().encode())
        return json.dumps(value, separators=(",", ":")).encode()

    def decode(self, data: bytes) -> Any:
        if self.model is not None:
            return self.model.model_validate_json(data)
        return json.loads(data)


@dataclass(frozen=True, slots=True)
class Closed:
    """A window that closed: its key (bytes, as read), the window and its final value."""

    key: bytes
    window: Window
    value: Any


class PartitionState:
    """The state of one input partition of an aggregate stage."""

    def __init__(
        self,
        partition: int,
        store: Store,
        *,
        window: WindowSpec | None,
        codec: StateCodec,
        initial: Callable[[], Any],
    ) -> None:
        self.partition = partition
        self.store = store
        self._window = window
        self._codec = codec
        self._initial = initial
        self.dirty: dict[bytes, Any] = {}
        self.watermark = Watermark(window.grace_ms if window is not None else 0)
        self._committed_max: int | None = None
        self.next_close = MAX_TIME_MS
        self._last_windows: tuple[int, int, list[Window]] | None = None
        self.reload()

    # -- the committed state -----------------------------------------------------------------

    def reload(self) -> None:
        """Forget the open transaction; read the watermark and the next window end again."""
        self.dirty.clear()
        raw = self.store.get(_WATERMARK_KEY)
        self._committed_max = None if raw is None else _TIME.unpack(raw)[0]
        self.watermark.max_event_ms = self._committed_max
        self.next_close = self._first_end(_PREFIX)

    def _first_end(self, low: bytes) -> int:
        for stored, _ in self.store.scan(low, _AFTER_WINDOWS):
            return split_key(stored)[0].end_ms
        return MAX_TIME_MS

    def key_count(self) -> int:
        """Window and table keys held: the store's count (RocksDB: an estimate), less the
        partition's watermark entry."""
        meta = 1 if self.store.get(_WATERMARK_KEY) is not None else 0
        return max(0, self.store.count() - meta)

    def discard(self) -> None:
        """The transaction aborted: its changes are gone."""
        self.reload()

    def changes(self) -> Iterator[tuple[bytes, bytes | None]]:
        """The changelog records of the open transaction: (key, value or None to delete)."""
        codec = self._codec
        for key, value in self.dirty.items():
            yield key, None if value is _DELETED else codec.encode(value)
        if self.watermark.max_event_ms != self._committed_max:
            assert self.watermark.max_event_ms is not None  # noqa: S101 - it moved
            yield _WATERMARK_KEY, _TIME.pack(self.watermark.max_event_ms)

    def commit(self, encoded: dict[bytes, bytes | None]) -> None:
        """The transaction committed with ``encoded`` (what ``changes`` gave): store it."""
        if encoded:
            self.store.write(encoded)
        self._committed_max = self.watermark.max_event_ms
        self.dirty.clear()

    # -- one record --------------------------------------------------------------------------

    def place(self, event_ms: int) -> tuple[list[Window], int]:
        """The record's windows that are still open, and how many of them have closed."""
        cached = self._last_windows
        if cached is not None and cached[0] <= event_ms < cached[1]:
            windows = cached[2]  # the same window(s) as the record before: the common case
        else:
            windows = windows_of(self._window, event_ms)
            if len(windows) == 1:
                self._last_windows = (windows[0].start_ms, windows[0].end_ms, windows)
        watermark = self.watermark.value
        if len(windows) == 1:
            return (windows, 0) if watermark < windows[0].end_ms else ([], 1)
        open_ = [w for w in windows if watermark < w.end_ms]
        return open_, len(windows) - len(open_)

    def current(self, stored_key: bytes) -> Any:
        found = self.dirty.get(stored_key, _MISSING)
        if found is _MISSING:
            raw = self.store.get(stored_key)
            return self._initial() if raw is None else self._codec.decode(raw)
        return self._initial() if found is _DELETED else found

    def fold(
        self, key: bytes, windows: list[Window], fold: Callable[[Any, Any], Any], record: Any
    ) -> list[tuple[Window, Any]]:
        """``fold(value, record)`` into every window of ``windows``; all or none (it may raise)."""
        if len(windows) == 1:  # tumbling windows and tables: one window, the hot path
            window = windows[0]
            stored = window_key(window, key)
            value = fold(self.current(stored), record)
            self.dirty[stored] = value
            self.next_close = min(self.next_close, window.end_ms)
            return [(window, value)]
        keys = [window_key(w, key) for w in windows]
        values = [fold(self.current(k), record) for k in keys]
        dirty = self.dirty
        for stored, value in zip(keys, values, strict=True):
            dirty[stored] = value
        end = windows[0].end_ms
        self.next_close = min(self.next_close, end)  # windows[0] ends first
        return list(zip(windows, values, strict=True))

    def observe(self, event_ms: int) -> None:
        self.watermark.observe(event_ms)

    # -- closing -----------------------------------------------------------------------------

    @property
    def closing_due(self) -> bool:
        return self.watermark.value >= self.next_close

    def close_due(self) -> list[Closed]:
        """Every window the watermark has passed, in end order; each becomes a tombstone."""
        watermark = self.watermark.value
        high = _end_bound(watermark)
        dirty = self.dirty
        found: dict[bytes, Any] = {
            stored: self._codec.decode(raw)
            for stored, raw in self.store.scan(_PREFIX, high)
            if stored not in dirty
        }
        found.update(
            (stored, value)
            for stored, value in dirty.items()
            if value is not _DELETED and stored < high and stored[:1] == _PREFIX
        )
        closed = []
        for stored in sorted(found):
            window, key = split_key(stored)
            closed.append(Closed(key, window, found[stored]))
            dirty[stored] = _DELETED
        live = [
            split_key(k)[0].end_ms
            for k, v in dirty.items()
            if v is not _DELETED and k[:1] == _PREFIX
        ]
        self.next_close = min(self._first_end(high), min(live, default=MAX_TIME_MS))
        return closed
