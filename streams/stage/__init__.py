"""Stages: consume, handle, produce and commit the input offsets in one Kafka transaction.

- ``runner``: ``StageRunner``, one worker slot's clients and loop;
- ``batch``: ``TransactionBatch``, the open transaction and what happens to each record;
- ``routing``: where a failed record goes and exactly what is written there (pure);
- ``recovery``: abort, producer reset, twin check;
- ``keyorder``: key-ordered retries in a running stage;
- ``gate``: retry partitions held back until due;
- ``serdes``: the stage's serdes and what a handler's return value means.
"""

from __future__ import annotations

from streams.stage.runner import StageRunner
from streams.stage.serdes import StageSerdes, normalize_outputs

__all__ = ["StageRunner", "StageSerdes", "normalize_outputs"]
