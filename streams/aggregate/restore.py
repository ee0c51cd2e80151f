"""Restoring an aggregate's state from its changelog when partitions are assigned.

For each assigned partition: open its local store; if it holds a checkpoint (written when this
worker last gave the partition up cleanly, recent enough that no tombstone after it can have
been compacted away) replay the changelog from there, else wipe the store and replay it all.
Replay stops at the changelog's last stable offset (the worker reads ``read_committed``, so
aborted writes are skipped), after waiting for any transaction still open on it to end: its
records may be the previous owner's last commit, whose offsets are already committed.
Only then does the worker process records of that partition.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streams.aggregate.store import Checkpoint, Store, StoreKind, now_ms, open_store
from streams.config import KafkaSettings
from streams.exceptions import KafkaClientError
from streams.kafka.clients import reader_config

__all__ = ["RestoreProgress", "Restorer"]

log = logging.getLogger("streams.aggregate")

# Records written to the store per batch during a restore.
_RESTORE_BATCH = 10_000
# A checkpoint older than this is not trusted: the changelog may have dropped tombstones written
# after it (delete.retention.ms defaults to 24 h), so the store is wiped and restored whole.
_CHECKPOINT_MAX_AGE_MS = 12 * 3600 * 1000
# How long to wait for a transaction left open on the changelog (a dead worker's, until the
# transaction timeout ends it) before restoring to the last stable offset anyway.
_OPEN_TXN_WAIT_S = 45.0
# No record for this long while restoring: the broker is gone.
_STALL_S = 60.0


class RestoreProgress:
    """Changelog offsets to restore and records restored, for the worker's stats."""

    def __init__(self) -> None:
        self.to_restore = 0
        self.restored = 0
        self.restoring = False
        self.seconds_last = 0.0
        self.full_restores = 0
        self.checkpoint_restores = 0


class Restorer:
    """Opens partition stores and brings them level with the changelog."""

    def __init__(
        self,
        *,
        group_id: str,
        changelog: str,
        kafka: KafkaSettings,
        store_kind: StoreKind,
        state_dir: Path,
        progress: RestoreProgress,
        on_progress: Callable[[], None] = lambda: None,
    ) -> None:
        self._group_id = group_id
        self._changelog = changelog
        self._kafka = kafka
        self._kind = store_kind
        self._dir = state_dir
        self.progress = progress
        self._on_progress = on_progress

    def directory(self, partition: int) -> Path:
        return self._dir / f"{self._changelog}-{partition}"

    def restore(self, partitions: Iterable[int]) -> dict[int, Store]:
        """Open and restore the stores of ``partitions``; returns them by partition."""
        wanted = sorted(set(partitions))
        if not wanted:
            return {}
        began = time.monotonic()
        reader = Consumer(reader_config(self._kafka, group_id=f"{self._group_id}.restore"))
        stores: dict[int, Store] = {}
        try:
            ends = self._stable_ends(reader, wanted)
            starts: dict[int, int] = {}
            for partition in wanted:
                store = open_store(self._kind, self.directory(partition))
                stores[partition] = store
                low, end = ends[partition]
                starts[partition] = self._start(store, partition, low, end)
                store.set_checkpoint(None)  # from now on the store moves with our commits
            pending = {p: (starts[p], ends[p][1]) for p in wanted if starts[p] < ends[p][1]}
            self.progress.to_restore = sum(end - start for start, end in pending.values())
            self.progress.restored = 0
            self.progress.restoring = bool(pending)
            self._read(reader, stores, pending)
        except BaseException:
            for store in stores.values():
                store.close()
            raise
        finally:
            reader.close()
            self.progress.restoring = False
        self.progress.seconds_last = time.monotonic() - began
        log.info(
            "state restored",
            extra={
                "changelog": self._changelog,
                "partitions": wanted,
                "records": self.progress.restored,
                "seconds": round(self.progress.seconds_last, 2),
            },
        )
        self._on_progress()
        return stores

    def _start(self, store: Store, partition: int, low: int, end: int) -> int:
        checkpoint = store.checkpoint()
        if (
            checkpoint is not None
            and low <= checkpoint.offset <= end
            and now_ms() - checkpoint.written_ms < _CHECKPOINT_MAX_AGE_MS
        ):
            self.progress.checkpoint_restores += 1
            return checkpoint.offset
        if store.persistent:
            log.info("partition %s: no usable checkpoint; restoring it whole", partition)
            store.wipe()
        self.progress.full_restores += 1
        return low

    def _stable_ends(self, reader: Consumer, partitions: list[int]) -> dict[int, tuple[int, int]]:
        """(log start, last stable offset) per partition, once no transaction is open on it."""
        uncommitted = Consumer(
            {
                **reader_config(self._kafka, group_id=f"{self._group_id}.restore"),
                "isolation.level": "read_uncommitted",
            }
        )
        deadline = time.monotonic() + _OPEN_TXN_WAIT_S
        try:
            while True:
                ends = {}
                open_ = []
                for p in partitions:
                    tp = TopicPartition(self._changelog, p)
                    low, stable = reader.get_watermark_offsets(tp, timeout=30)
                    high = uncommitted.get_watermark_offsets(tp, timeout=30)[1]
                    ends[p] = (low, stable)
                    if stable < high:
                        open_.append(p)
                if not open_ or time.monotonic() > deadline:
                    if open_:
                        log.warning(
                            "changelog %s partitions %s still have an open transaction after "
                            "%.0f s; restoring to their last stable offset",
                            self._changelog,
                            open_,
                            _OPEN_TXN_WAIT_S,
                        )
                    return ends
                time.sleep(0.2)
        finally:
            uncommitted.close()

    def _read(
        self, reader: Consumer, stores: dict[int, Store], pending: dict[int, tuple[int, int]]
    ) -> None:
        if not pending:
            return
        reader.assign([TopicPartition(self._changelog, p, s) for p, (s, _) in pending.items()])
        batches: dict[int, dict[bytes, bytes | None]] = {p: {} for p in pending}
        last_seen = time.monotonic()
        last_report = time.monotonic()
        while pending:
            messages = reader.consume(num_messages=1000, timeout=0.5)
            if messages:
                last_seen = time.monotonic()
            for message in messages:
                self._apply(message, pending, stores, batches)
            for partition in list(pending):  # trailing markers: the position passed the end
                position = reader.position([TopicPartition(self._changelog, partition)])[0]
                if position.offset >= pending[partition][1]:
                    self._done(partition, pending, stores, batches)
            if time.monotonic() - last_report > 2.0:  # noqa: PLR2004 - the stats cadence
                last_report = time.monotonic()
                self._on_progress()
            if pending and time.monotonic() - last_seen > _STALL_S:
                raise KafkaClientError(
                    f"restoring {self._changelog}: no record for {_STALL_S:.0f} s "
                    f"(partitions left: {sorted(pending)})",
                    hint="check the broker; the worker restarts and restores again",
                )

    def _apply(
        self,
        message: Message,
        pending: dict[int, tuple[int, int]],
        stores: dict[int, Store],
        batches: dict[int, dict[bytes, bytes | None]],
    ) -> None:
        partition = message.partition() or 0
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
                self._done(partition, pending, stores, batches)
            return
        key = message.key()
        if key is not None and partition in batches:
            batch = batches[partition]
            batch[bytes(key)] = message.value()
            self.progress.restored += 1
            if len(batch) >= _RESTORE_BATCH:
                stores[partition].write(batch)
                batch.clear()
        if partition in pending and (message.offset() or 0) + 1 >= pending[partition][1]:
            self._done(partition, pending, stores, batches)

    @staticmethod
    def _done(
        partition: int,
        pending: dict[int, tuple[int, int]],
        stores: dict[int, Store],
        batches: dict[int, dict[bytes, bytes | None]],
    ) -> None:
        if partition not in pending:
            return
        batch = batches.pop(partition, {})
        if batch:
            stores[partition].write(batch)
        del pending[partition]

    def checkpoint(self, stores: dict[int, Store]) -> None:
        """The worker gives these partitions up cleanly: note where each changelog ends.

        No checkpoint where a transaction is open on the changelog or its end is unknown: the
        next owner then restores that partition whole, which is always safe.
        """
        persistent = {p: s for p, s in stores.items() if s.persistent}
        if not persistent:
            return
        config = reader_config(self._kafka, group_id=f"{self._group_id}.restore")
        committed = Consumer(config)
        uncommitted = Consumer({**config, "isolation.level": "read_uncommitted"})
        try:
            for partition, store in persistent.items():
                tp = TopicPartition(self._changelog, partition)
                try:
                    stable = committed.get_watermark_offsets(tp, timeout=10)[1]
                    high = uncommitted.get_watermark_offsets(tp, timeout=10)[1]
                except KafkaException:
                    log.warning("no checkpoint for %s/%s: end unknown", self._changelog, partition)
                    continue
                if stable == high:
                    store.set_checkpoint(Checkpoint(stable, now_ms()))
        finally:
            committed.close()
            uncommitted.close()
