"""Resilient Kafka stream pipelines: exactly-once stages, retry topics, dead-letter topics.

What a pipeline author uses, in one place::

    from streams import Output, Pipeline, Record, RetryPolicy, codecs

    pipeline = Pipeline("orders", partitions=4)

    placed = codecs.avro(OrderPlaced, "orders/order_placed.v1.avsc")

    @pipeline.stage("validate", inputs=["orders.raw"], input=codecs.json(RawOrder),
                    outputs={"orders.placed": placed})
    def validate(record: Record[RawOrder]) -> OrderPlaced: ...

Everything else (runners, the lag monitor, the Kafka layer) lives in its own module; this
facade is tested to export exactly ``__all__``.
"""

from __future__ import annotations

from streams import codecs
from streams.codecs import avro, raw, text
from streams.database import SinkTransaction
from streams.dependency import Dependency
from streams.exceptions import (
    DeadLetter,
    DependencyUnavailable,
    HandlerSignal,
    RetryLater,
    StreamsError,
)
from streams.pipeline import Pipeline, load_pipeline
from streams.record import Output, Record
from streams.retry import RetryPolicy
from streams.testing import Outcome, Produced, StageHarness

__all__ = [
    "DeadLetter",
    "Dependency",
    "DependencyUnavailable",
    "HandlerSignal",
    "Outcome",
    "Output",
    "Pipeline",
    "Produced",
    "Record",
    "RetryLater",
    "RetryPolicy",
    "SinkTransaction",
    "StageHarness",
    "StreamsError",
    "__version__",
    "avro",
    "codecs",
    "load_pipeline",
    "raw",
    "text",
]

__version__ = "0.1.0"
