"""Pipelines as code: named stages, their topics, encodings and handlers.

::

    pipeline = Pipeline("orders", partitions=3)

    @pipeline.stage("validate", inputs=["orders.raw"], input=json(RawOrder),
                    outputs={"orders.placed": avro(OrderPlaced, "orders/order_placed.v1.avsc")})
    def validate(record: Record[RawOrder]) -> OrderPlaced:
        return OrderPlaced(...)

A stage ``S`` of pipeline ``P`` is the consumer group ``P.S``. A handler returns nothing, a
value (written to the stage's only output with the input key), an ``Output`` or a list of them.
``async def`` handlers run concurrently within a batch, up to ``concurrency`` at a time.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Iterable, Mapping

from streams.codecs import Codec, raw, text
from streams.exceptions import TopologyError
from streams.retry import RetryPolicy
from streams.spec import (
    INTERNAL_TOPICS,
    REPLAY_LEDGER_TOPIC,
    STATS_TOPIC,
    Component,
    Handler,
    SinkHandler,
    SinkSpec,
    StageSpec,
    TopicSpec,
)

__all__ = [
    "INTERNAL_TOPICS",
    "REPLAY_LEDGER_TOPIC",
    "STATS_TOPIC",
    "Handler",
    "Pipeline",
    "SinkSpec",
    "StageSpec",
    "TopicSpec",
    "load_pipeline",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class Pipeline:
    """A named set of stages connected by topics."""

    def __init__(
        self,
        name: str,
        *,
        partitions: int = 3,
        topic_config: Mapping[str, str] | None = None,
    ) -> None:
        if not _NAME.match(name):
            raise TopologyError(f"pipeline name {name!r} must be letters, digits, '_' or '-'")
        if partitions < 1:
            raise TopologyError(f"pipeline {name!r}: partitions must be at least 1")
        self.name = name
        self.default_partitions = partitions
        self.default_topic_config = dict(topic_config or {})
        self._stages: dict[str, Component] = {}
        self._topics: dict[str, TopicSpec] = {}

    def topic(
        self, name: str, *, partitions: int | None = None, config: Mapping[str, str] | None = None
    ) -> str:
        """Declare a topic's partition count and config (else the pipeline's defaults apply)."""
        _check_topic(name)
        if partitions is not None and partitions < 1:
            raise TopologyError(f"topic {name!r}: partitions must be at least 1")
        self._topics[name] = TopicSpec(
            name,
            partitions or self.default_partitions,
            {**self.default_topic_config, **(config or {})},
        )
        return name

    def stage(
        self,
        name: str,
        *,
        inputs: Iterable[str],
        outputs: Mapping[str, Codec] | Iterable[str] = (),
        input: Codec | None = None,  # noqa: A002 - the natural word in a declaration
        key: Codec | None = None,
        concurrency: int = 16,
        retry: RetryPolicy | None = None,
    ) -> Callable[[Handler], Handler]:
        """Declare a stage; use as a decorator on its handler."""

        def register(handler: Handler) -> Handler:
            self.add_stage(
                name,
                handler,
                inputs=inputs,
                outputs=outputs,
                input=input,
                key=key,
                concurrency=concurrency,
                retry=retry,
            )
            return handler

        return register

    # Over 50 lines: one check per declaration mistake, each with the message that names it.
    def add_stage(
        self,
        name: str,
        handler: Handler,
        *,
        inputs: Iterable[str],
        outputs: Mapping[str, Codec] | Iterable[str] = (),
        input: Codec | None = None,  # noqa: A002
        key: Codec | None = None,
        concurrency: int = 16,
        retry: RetryPolicy | None = None,
    ) -> StageSpec:
        if not _NAME.match(name):
            raise TopologyError(f"stage name {name!r} must be letters, digits, '_' or '-'")
        if name in self._stages:
            raise TopologyError(f"pipeline {self.name!r} already has a stage {name!r}")
        if isinstance(inputs, str) or isinstance(outputs, str):
            raise TopologyError(
                f"stage {name!r}: inputs and outputs take a list of topics, not one string",
                hint='write inputs=["orders"], not inputs="orders"',
            )
        input_topics = tuple(inputs)
        if not input_topics:
            raise TopologyError(f"stage {name!r} reads no topic: give inputs=[...]")
        output_codecs = (
            dict(outputs) if isinstance(outputs, Mapping) else dict.fromkeys(outputs, raw())
        )
        for topic in (*input_topics, *output_codecs):
            _check_topic(topic)
        loop = set(input_topics) & set(output_codecs)
        if loop:
            raise TopologyError(f"stage {name!r} writes to its own input {sorted(loop)}")
        if concurrency < 1:
            raise TopologyError(f"stage {name!r}: concurrency must be at least 1")
        if retry is not None and retry.key_ordered and inspect.iscoroutinefunction(handler):
            raise TopologyError(
                f"stage {name!r}: key-ordered retries need a plain (not async) handler",
                hint="an async stage runs a batch's records at once, so a later record of a key "
                "would be called before the earlier one is known to fail; drop key_ordered or "
                "make the handler synchronous",
            )
        spec = StageSpec(
            pipeline=self.name,
            name=name,
            inputs=input_topics,
            input_codec=input or raw(),
            key_codec=key or text(),
            outputs=output_codecs,
            handler=handler,
            concurrency=concurrency,
            retry=retry or RetryPolicy(),
        )
        self._stages[name] = spec
        return spec

    def sink(
        self,
        name: str,
        *,
        inputs: Iterable[str],
        database: str,
        input: Codec | None = None,  # noqa: A002
        key: Codec | None = None,
        setup_sql: Iterable[str] = (),
    ) -> Callable[[SinkHandler], SinkHandler]:
        """Declare a sink stage: rows and input offsets commit in one database transaction.

        ``database`` is a URL (``sqlite:///orders.db``, ``postgresql://...``); the environment
        variable STREAMS_SINK_DATABASE_URL overrides it at run time. ``setup_sql`` runs at
        start-up (use CREATE TABLE IF NOT EXISTS).
        """

        def register(handler: SinkHandler) -> SinkHandler:
            if not _NAME.match(name):
                raise TopologyError(f"sink name {name!r} must be letters, digits, '_' or '-'")
            if name in self._stages:
                raise TopologyError(f"pipeline {self.name!r} already has a stage {name!r}")
            if isinstance(inputs, str):
                raise TopologyError(f"sink {name!r}: inputs take a list of topics, not a string")
            topics = tuple(inputs)
            if not topics:
                raise TopologyError(f"sink {name!r} reads no topic: give inputs=[...]")
            for topic in topics:
                _check_topic(topic)
            self._stages[name] = SinkSpec(
                pipeline=self.name,
                name=name,
                inputs=topics,
                input_codec=input or raw(),
                key_codec=key or text(),
                database=database,
                handler=handler,
                setup_sql=tuple(setup_sql),
            )
            return handler

        return register

    @property
    def stages(self) -> list[Component]:
        return list(self._stages.values())

    def component(self, name: str) -> Component:
        """The stage or sink called ``name`` (what a worker runs)."""
        try:
            return self._stages[name]
        except KeyError:
            known = ", ".join(self._stages) or "none"
            raise TopologyError(
                f"pipeline {self.name!r} has no stage {name!r} (stages: {known})",
                hint="name one of its stages (the S of the consumer group P.S)",
            ) from None

    def get(self, name: str) -> StageSpec:
        """The Kafka-to-Kafka stage called ``name``."""
        found = self.component(name)
        if found.kind != "stage":
            raise TopologyError(f"{name!r} of pipeline {self.name!r} is a sink: use get_sink()")
        return found

    def get_sink(self, name: str) -> SinkSpec:
        """The sink called ``name``."""
        found = self.component(name)
        if found.kind != "sink":
            raise TopologyError(f"{name!r} of pipeline {self.name!r} is a stage: use get()")
        return found

    def topic_specs(self) -> list[TopicSpec]:
        """Every topic the pipeline reads or writes, with its declared or default settings."""
        names: dict[str, None] = {}
        for stage in self._stages.values():
            names.update(dict.fromkeys(stage.inputs))
            names.update(dict.fromkeys(stage.written_topics))  # none for a sink
        return [
            self._topics.get(
                name, TopicSpec(name, self.default_partitions, dict(self.default_topic_config))
            )
            for name in names
        ]


def _check_topic(name: str) -> None:
    if not _TOPIC.match(name) or name in {".", ".."}:
        raise TopologyError(
            f"topic name {name!r} is not valid: 1-249 of letters, digits, '.', '_' and '-'"
        )


def load_pipeline(reference: str) -> Pipeline:
    """Import ``module:attribute`` and return the Pipeline it names."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise TopologyError(
            f"{reference!r} is not MODULE:PIPELINE",
            hint="name the module and the pipeline variable, e.g. streams.examples.hello:pipeline",
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise TopologyError(
            f"cannot import {module_name!r}: {error}",
            hint="run from the folder that holds the module, or install it",
        ) from error
    pipeline = getattr(module, attribute, None)
    if not isinstance(pipeline, Pipeline):
        raise TopologyError(f"{reference!r} is not a Pipeline (found {type(pipeline).__name__})")
    return pipeline
