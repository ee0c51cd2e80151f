"""Key-ordered retries: later records of a key wait behind the record of that key in retry.

Opt in with ``RetryPolicy(key_ordered=True)``. Without it, a record that goes to a retry topic
is overtaken by the records of the same key that follow it (the usual trade-off of retry
topics, and the only behaviour of other retry-topic implementations). With it:

- a record whose key has an earlier record waiting in a retry topic is not processed; it is
  *parked*: written, untouched, to the retry topic and partition where that earlier record
  waits, with the same due time, so it sits behind it;
- a record read back from a retry topic is processed only if it is the *head* of its key, the
  earliest (by original offset) of that key's waiting records; otherwise it is moved on to the
  tier where the head now waits;
- when the head succeeds, or goes to the dead-letter topic, the next record of the key becomes
  the head and is processed when it is read.

Records are identified by where they entered the stage (``streams.original.*``), ordered by
their original offset, and grouped by (original topic, original partition, key): the order kept
is the order of one input partition, as Kafka's own. Records without a key are not ordered.

The ledger of waiting records lives in memory and is rebuilt from the retry topics (from the
group's committed offsets to their end) whenever partitions are assigned and after a rewind,
so it always matches what is committed. Retry records of a key-ordered stage go to the retry
partition with the number of their original partition, and the stage uses the ``range``
assignor, which gives partition *p* of every topic of the stage to the same worker: the worker
that reads a key's input partition also reads that key's retry partitions.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KeyOrderLedger", "OrderKey", "Waiting"]

# (original topic, original partition, key bytes)
OrderKey = tuple[str, int, bytes]


@dataclass(frozen=True)
class Waiting:
    """One record of a key waiting in a retry topic."""

    original_offset: int
    topic: str  # the retry topic it waits in now
    due_ms: int


class KeyOrderLedger:
    """The records waiting in retry topics, per key, earliest original offset first."""

    def __init__(self) -> None:
        self._keys: dict[OrderKey, dict[int, Waiting]] = {}

    def __len__(self) -> int:
        return sum(len(waiting) for waiting in self._keys.values())

    def __bool__(self) -> bool:  # O(1), unlike len(): asked for every record
        return bool(self._keys)

    def head(self, key: OrderKey) -> Waiting | None:
        """The earliest waiting record of ``key``, or None if none waits."""
        waiting = self._keys.get(key)
        if not waiting:
            return None
        return waiting[min(waiting)]

    def is_head(self, key: OrderKey, original_offset: int) -> bool:
        """True if no earlier record of ``key`` waits (a record not in the ledger counts too)."""
        waiting = self._keys.get(key)
        return not waiting or min(waiting) >= original_offset

    def wait(self, key: OrderKey, record: Waiting) -> None:
        """``record`` now waits in ``record.topic`` (added, or moved from another tier)."""
        self._keys.setdefault(key, {})[record.original_offset] = record

    def done(self, key: OrderKey, original_offset: int) -> None:
        """The record left the retry path (processed, or dead-lettered)."""
        waiting = self._keys.get(key)
        if waiting is None:
            return
        waiting.pop(original_offset, None)
        if not waiting:
            del self._keys[key]

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget the keys of original partitions this worker no longer owns."""
        for key in [k for k in self._keys if k[1] in partitions]:
            del self._keys[key]

    def clear(self) -> None:
        self._keys.clear()
