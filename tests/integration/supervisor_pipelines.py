"""A one-stage pipeline for the supervisor tests; one of its worker slots can be broken.

``TEST_PIPELINE``, ``TEST_INPUT`` and ``TEST_OUTPUT`` name it (``build()`` makes the same
pipeline in-process). With ``TEST_BROKEN_SLOT=N`` the worker started with ``--slot N`` fails
while it loads this module, so it exits 5 (cannot start) and its supervisor leaves it down; the
supervisor itself (``streams run``, no ``--slot``) and the other slots load it normally.
"""

from __future__ import annotations

import os
import sys

from streams.exceptions import ConfigError
from streams.pipeline import Pipeline
from streams.record import Record


def _worker_slot() -> str | None:
    """The ``--slot`` of the worker process loading this module (None in the supervisor)."""
    argv = sys.argv
    return argv[argv.index("--slot") + 1] if "--slot" in argv[:-1] else None


def build(name: str, source: str, sink: str) -> Pipeline:
    pipeline = Pipeline(name, partitions=2)

    @pipeline.stage("copy", inputs=[source], outputs=[sink])
    def copy(record: Record[bytes]) -> bytes:
        return record.value

    return pipeline


_broken = os.environ.get("TEST_BROKEN_SLOT")
if _broken is not None and _worker_slot() == _broken:
    raise ConfigError(f"worker slot {_broken} is broken on purpose (TEST_BROKEN_SLOT)")

pipeline = build(
    os.environ.get("TEST_PIPELINE", "supervised"),
    os.environ.get("TEST_INPUT", "supervised.in"),
    os.environ.get("TEST_OUTPUT", "supervised.out"),
)
