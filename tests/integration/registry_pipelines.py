"""An Avro stage for the registry-outage tests, loadable by worker subprocesses.

Names come from the environment (``TEST_PIPELINE``, ``TEST_INPUT``, ``TEST_OUTPUT``); the
schema is ``outage/order.v1.avsc`` under ``STREAMS_SCHEMAS_DIR``, which the test writes with a
namespace of its own (``write_schema``), so its subject is new on every run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel

from streams import Pipeline, Record, RetryPolicy, codecs

SCHEMA = "outage/order.v1.avsc"


class Order(BaseModel):
    order_id: str
    n: int


def write_schema(schemas_dir: Path, namespace: str, *, version: int = 1) -> Path:
    """``outage/order.v<version>.avsc``; version 2 adds a field with a default (compatible)."""
    fields: list[dict[str, object]] = [
        {"name": "order_id", "type": "string"},
        {"name": "n", "type": "int"},
    ]
    if version == 2:
        fields.append({"name": "channel", "type": "string", "default": "web"})
    path = schemas_dir / f"outage/order.v{version}.avsc"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"type": "record", "name": "Order", "namespace": namespace, "fields": fields}
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def build(name: str, source: str, sink: str) -> Pipeline:
    pipeline = Pipeline(name, partitions=1)

    @pipeline.stage(
        "count",
        inputs=[source],
        input=codecs.avro(Order, SCHEMA),
        outputs={sink: codecs.raw()},
        # short tiers, many attempts: a record waits out a registry outage of ~20 s in retry
        retry=RetryPolicy(tiers=(1.0, 2.0, 4.0), max_attempts=10, jitter=0.0),
    )
    def count(record: Record[Order]) -> bytes:
        return f"{record.value.order_id}:{record.value.n}".encode()

    return pipeline


pipeline = build(
    os.environ.get("TEST_PIPELINE", "outage"),
    os.environ.get("TEST_INPUT", "outage.in"),
    os.environ.get("TEST_OUTPUT", "outage.out"),
)
