"""The faust chaos pipeline: one faust agent copying ``<name>.in`` to ``<name>.out``.

It runs as stage ``copy`` of pipeline ``<name>`` (``Pipeline.faust_stage``): its app id is the
group ``<name>.copy``; every 1000th record, from 500 on, raises in the agent and must reach
``<name>.copy.dlq``. Environment: CHAOS_NAME, STREAMS_BOOTSTRAP_SERVERS.
"""

from __future__ import annotations

import os
from typing import Any

import faust

from streams.config import KafkaSettings
from streams.exceptions import DeadLetter
from streams.pipeline import Pipeline

PARTITIONS = 4
STAGE = "copy"


def is_poison(n: int) -> bool:
    return n % 1000 == 500


def build(name: str) -> Pipeline:
    app = faust.App(
        f"{name}.{STAGE}",
        broker=f"kafka://{KafkaSettings().bootstrap_servers}",
        processing_guarantee="exactly_once",
        store="memory://",
        web_enabled=False,
        topic_partitions=PARTITIONS,
        topic_allow_declare=False,  # `streams topics create` made them
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=0.5,
        # a killed worker's partitions move after 10 s, not faust's default 60 s
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
    )
    codec: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "partitions": PARTITIONS,
    }
    source = app.topic(f"{name}.in", **codec)
    sink = app.topic(f"{name}.out", **codec)

    async def copy(stream: Any) -> None:
        async for event in stream.events():
            if is_poison(int(event.value)):
                raise DeadLetter("poison record")
            await sink.send(key=event.key, value=event.value)

    agent = app.agent(source, name=f"{name}.copy-agent")(copy)
    pipeline = Pipeline(name, partitions=PARTITIONS)
    pipeline.faust_stage(STAGE, app=app, agent=agent, outputs=[f"{name}.out"])
    return pipeline


pipeline = build(os.environ.get("CHAOS_NAME", "faustchaos"))
