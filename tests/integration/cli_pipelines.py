"""A pipeline with declared topic settings, for the `streams topics create` tests.

``declared()`` builds one for a test run in-process; the module-level ``pipeline`` is what a
`streams topics create tests.integration.cli_pipelines:pipeline` subprocess loads, with its
names from the environment: ``TEST_PIPELINE``, ``TEST_INPUT``, ``TEST_OUTPUT``.
"""

from __future__ import annotations

import os

from streams.pipeline import Pipeline
from streams.record import Record

# The declaration the tests check against: a pipeline-wide default plus per-topic overrides.
INPUT_PARTITIONS = 3
OUTPUT_PARTITIONS = 2
DEFAULT_CONFIG = {"retention.ms": "3600000"}
OUTPUT_CONFIG = {"cleanup.policy": "compact", "max.message.bytes": "524288"}


def declared(name: str, source: str, sink: str) -> Pipeline:
    """A one-stage pipeline whose two topics have declared partitions and config."""
    pipeline = Pipeline(name, partitions=INPUT_PARTITIONS, topic_config=DEFAULT_CONFIG)
    pipeline.topic(sink, partitions=OUTPUT_PARTITIONS, config=OUTPUT_CONFIG)

    @pipeline.stage("copy", inputs=[source], outputs=[sink])
    def copy(record: Record[bytes]) -> bytes:
        return record.value

    return pipeline


def expected(source: str, sink: str) -> dict[str, tuple[int, dict[str, str]]]:
    """Partitions and config each topic of ``declared(..., source, sink)`` should have."""
    return {
        source: (INPUT_PARTITIONS, dict(DEFAULT_CONFIG)),
        sink: (OUTPUT_PARTITIONS, {**DEFAULT_CONFIG, **OUTPUT_CONFIG}),
    }


pipeline = declared(
    os.environ.get("TEST_PIPELINE", "clitopics"),
    os.environ.get("TEST_INPUT", "clitopics.in"),
    os.environ.get("TEST_OUTPUT", "clitopics.out"),
)
