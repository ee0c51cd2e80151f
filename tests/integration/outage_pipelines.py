"""Two stages for the dependency-outage test: ``ingest`` copies, ``enrich`` calls a pricing service.

Environment: TEST_PIPELINE, TEST_INPUT, TEST_MID, TEST_OUTPUT, PRICING_URL.
"""

from __future__ import annotations

import os

from streams.codecs import raw
from streams.dependency import Dependency
from streams.examples.pricing_service import fetch_total
from streams.pipeline import Pipeline
from streams.record import Output, Record
from streams.retry import RetryPolicy

pricing = Dependency("pricing", timeout_s=1.0, failure_threshold=3, open_for_s=2.0)


def ingest(record: Record[bytes]) -> bytes:
    return record.value


def enrich(record: Record[bytes]) -> Output:
    url = f"{os.environ['PRICING_URL']}/price?sku=sku-{int(record.value) % 7}&quantity=2"
    total = pricing.call_sync(fetch_total, url, record.idempotency_key)
    return Output(record.value + b":" + str(total).encode())


def build(name: str, source: str, mid: str, sink: str) -> Pipeline:
    pipeline = Pipeline(name, partitions=2)
    pipeline.add_stage("ingest", ingest, inputs=[source], outputs={mid: raw()})
    pipeline.add_stage(
        "enrich",
        enrich,
        inputs=[mid],
        outputs={sink: raw()},
        # enough attempts to outlast the test's outage (about 30 s, most of it the test's own
        # reads): 1 + 2 + 4 * 18 s of waiting at the least
        retry=RetryPolicy(tiers=(1.0, 2.0, 4.0), max_attempts=21, jitter=0.1),
    )
    return pipeline


pipeline = build(
    os.environ.get("TEST_PIPELINE", "outage"),
    os.environ.get("TEST_INPUT", "outage.in"),
    os.environ.get("TEST_MID", "outage.mid"),
    os.environ.get("TEST_OUTPUT", "outage.out"),
)
