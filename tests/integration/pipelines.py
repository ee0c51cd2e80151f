"""Pipelines the integration tests run in worker subprocesses.

Topic and pipeline names come from the environment, so each test gets its own topics:
``TEST_PIPELINE``, ``TEST_INPUT``, ``TEST_OUTPUT``; ``TEST_DELAY_MS`` slows the handler;
``TEST_FAILURES=1`` makes 10 % of records fail their first attempt (RetryLater) and 1 % fail
for good (DeadLetter); ``TEST_OUTPUT_TYPO=1`` makes the record numbered 5 go to a topic the
stage does not declare (a bug in the stage, which must stop it rather than dead-letter);
``TEST_DEAD_EVERY=N`` dead-letters every N-th record.
Tests build the same pipeline in-process with ``build_copy`` to create its topics.
"""

from __future__ import annotations

import os
import time

from streams import headers
from streams.codecs import raw
from streams.exceptions import DeadLetter, RetryLater
from streams.pipeline import Pipeline
from streams.record import Output, Record
from streams.retry import RetryPolicy

_DELAY_S = float(os.environ.get("TEST_DELAY_MS", "0")) / 1000
_FAILURES = os.environ.get("TEST_FAILURES") == "1"
_TYPO = os.environ.get("TEST_OUTPUT_TYPO") == "1"
_DEAD_EVERY = int(os.environ.get("TEST_DEAD_EVERY", "0"))


def copy_stage(record: Record[bytes]) -> Output:
    """Copy each record, tagging where it came from so the checker can map output to input."""
    if _DELAY_S:
        time.sleep(_DELAY_S)  # slows the stage so that faults land while it works
    if _DEAD_EVERY and int(record.value) % _DEAD_EVERY == 0:
        raise DeadLetter("every record of this test is dead-lettered")
    if _FAILURES:
        n = int(record.value)
        if n % 100 == 42:
            raise DeadLetter("poison record")
        if n % 10 == 3 and headers.get(record.headers, headers.ATTEMPT) is None:
            raise RetryLater("fails its first attempt")
    return Output(
        record.value,
        topic=f"{record.topic}.typo" if _TYPO and record.value == b"5" else None,
        headers=[("src", f"{record.partition}:{record.offset}".encode())],
    )


def build_copy(name: str, source: str, sink: str, *, partitions: int = 4) -> Pipeline:
    pipeline = Pipeline(name, partitions=partitions)
    pipeline.add_stage(
        "copy",
        copy_stage,
        inputs=[source],
        outputs={sink: raw()},
        retry=RetryPolicy(tiers=(0.5, 1.0), max_attempts=3, jitter=0.1),
    )
    return pipeline


copy = build_copy(
    os.environ.get("TEST_PIPELINE", "copytest"),
    os.environ.get("TEST_INPUT", "copy.in"),
    os.environ.get("TEST_OUTPUT", "copy.out"),
)
