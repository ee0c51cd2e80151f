"""The offsets one worker is responsible for, kept in one place for every component kind.

Per partition the book knows the next offset of the open batch (the record after the last one
processed), the offset this worker last committed, and whether the partition was sought since
that commit. From those and the consumer's positions it computes what to commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["TP", "OffsetBook"]

TP = tuple[str, int]


class OffsetBook:
    """Next offsets of the open batch, last commits, and partitions sought since then."""

    def __init__(self) -> None:
        self.next: dict[TP, int] = {}
        self.committed: dict[TP, int] = {}
        self.seeked: set[TP] = set()
        self.in_batch = 0  # records processed since the last commit or rewind

    def processed(self, topic: str, partition: int, offset: int) -> None:
        """The record at ``offset`` is done (written, routed or parked) in the open batch."""
        self.next[(topic, partition)] = offset + 1
        self.in_batch += 1

    def to_commit(self, positions: Iterable[Any] | None = None) -> dict[TP, int]:
        """The next offsets to commit: the batch's own, moved past trailing markers.

        ``positions`` (the consumer's ``position()`` for some partitions) is given only between
        batches, when everything handed to us has been processed: then a position differs from
        our own count only by control markers and aborted records, and committing it avoids a
        permanent lag behind them (librdkafka#3917), also on partitions that held nothing but
        those. Mid-batch (a rebalance inside consume()) a position is past unprocessed records,
        and a position after a seek says nothing about markers: those are not used.
        """
        offsets = dict(self.next)
        for tp in positions or ():
            key = (tp.topic, tp.partition)
            if key in self.seeked or tp.error is not None or tp.offset < 0:
                continue
            if tp.offset > max(offsets.get(key, -1), self.committed.get(key, -1)):
                offsets[key] = tp.offset
        return offsets

    def mark_committed(self, offsets: Mapping[TP, int]) -> None:
        """``offsets`` are committed: the next batch starts empty."""
        self.committed.update(offsets)
        self.clear_batch()

    def clear_batch(self) -> None:
        """Forget the open batch (committed, aborted or rewound)."""
        self.next.clear()
        self.seeked.clear()
        self.in_batch = 0

    def forget(self, partitions: Iterable[Any]) -> None:
        """Partitions that left this worker (revoked or lost)."""
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self.next.pop(key, None)
            self.committed.pop(key, None)
