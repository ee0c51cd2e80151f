"""Aggregate stages: windowed or running per-key state, its changelog in the stage's transaction.

- ``runner``: ``AggregateRunner``, one worker slot's clients and loop;
- ``batch``: ``AggregateBatch``, the open transaction: fold, late records, closing windows;
- ``state``: one partition's state, watermark and window closing (pure but for its store);
- ``store``: where the state lives between commits (memory, RocksDB, SQLite);
- ``restore``: the state brought level with the changelog on every assignment;
- ``emit``: window results, re-keyed records and changelog records;
- ``stats``: the worker's counters (restore progress included).

Windows and the watermark are ``streams.windows``; the declaration is
``Pipeline.aggregate`` (``streams.spec.AggregateSpec``).
"""

from __future__ import annotations

from streams.aggregate.runner import AggregateRunner

__all__ = ["AggregateRunner"]
