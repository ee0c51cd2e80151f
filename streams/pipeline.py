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

import dataclasses
import importlib
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel

from streams.codecs import Codec, raw, text
from streams.exceptions import TopologyError
from streams.record import Record
from streams.retry import RetryPolicy
from streams.spec import (
    INTERNAL_TOPICS,
    STATS_TOPIC,
    AggregateSpec,
    Component,
    FaustSpec,
    Handler,
    SinkHandler,
    SinkSpec,
    StageSpec,
    TopicSpec,
    faust_spec,
)
from streams.windows import Window, WindowSpec

__all__ = [
    "INTERNAL_TOPICS",
    "STATS_TOPIC",
    "AggregateSpec",
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

    # Over 50 lines: a declaration with one keyword per choice; the checks are in _aggregate.
    def aggregate(
        self,
        name: str,
        *,
        inputs: Iterable[str],
        outputs: Mapping[str, Codec] | Iterable[str],
        initial: Any,
        window: WindowSpec | None = None,
        emit: Literal["final", "update"] = "final",
        late: Literal["dlq", "drop"] = "dlq",
        input: Codec | None = None,  # noqa: A002
        key: Callable[[Record[Any]], Any] | None = None,
        key_codec: Codec | None = None,
        event_time: Callable[[Any], Any] | None = None,
        result: Callable[[Any, Window, Any], Any] | None = None,
        state: type[BaseModel] | None = None,
        store: Literal["memory", "rocksdb", "sqlite"] = "rocksdb",
        retry: RetryPolicy | None = None,
    ) -> Callable[[Callable[[Any, Record[Any]], Any]], Callable[[Any, Record[Any]], Any]]:
        """Declare an aggregate; decorates its fold, ``fold(value, record) -> value``.

        Every choice is described on ``streams.spec.AggregateSpec``; README "Aggregates".
        """

        def register(
            fold: Callable[[Any, Record[Any]], Any],
        ) -> Callable[[Any, Record[Any]], Any]:
            self._aggregate(
                AggregateSpec(
                    pipeline=self.name,
                    name=name,
                    inputs=tuple(inputs) if not isinstance(inputs, str) else (inputs,),
                    input_codec=input or raw(),
                    key_codec=key_codec or text(),
                    outputs=(
                        dict(outputs)
                        if isinstance(outputs, Mapping)
                        else dict.fromkeys(outputs, _result_codec())
                    ),
                    fold=fold,
                    initial=initial if callable(initial) else (lambda: initial),
                    partitions=0,  # set by _aggregate from the inputs
                    window=window,
                    emit=emit,
                    late=late,
                    result=result,
                    event_time=event_time,
                    key=key,
                    state_model=state,
                    store=store,
                    retry=retry or RetryPolicy(),
                ),
                inputs,
            )
            return fold

        return register

    def _aggregate(self, spec: AggregateSpec, inputs: object) -> None:
        if spec.name in self._stages:
            raise TopologyError(f"pipeline {self.name!r} already has a stage {spec.name!r}")
        counts = {t: self._partitions_of(t) for t in spec.inputs}
        _check_aggregate(spec, inputs, counts)
        spec = dataclasses.replace(spec, partitions=next(iter(counts.values())))
        for topic in spec.written_topics:
            if topic in spec.outputs:
                continue
            config = dict(self.default_topic_config)
            if topic == spec.changelog_topic:
                # compaction keeps each key's latest value; a tombstone deletes a closed window
                config = {**config, "cleanup.policy": "compact"}
            self._topics[topic] = TopicSpec(topic, spec.partitions, config)
        self._stages[spec.name] = spec

    def _partitions_of(self, topic: str) -> int:
        declared = self._topics.get(topic)
        return declared.partitions if declared is not None else self.default_partitions

    def faust_stage(
        self, name: str, *, app: Any, agent: Any, outputs: Iterable[str] = ()
    ) -> FaustSpec:
        """Run ``agent`` of the faust ``app`` as stage ``name`` (``streams.agents``).

        The app's id must be the stage's group ``P.S``; ``outputs``: the topics the agent
        writes (for ``topics create`` and the lag view).
        """
        spec = faust_spec(self.name, name, app, agent, tuple(outputs))
        if name in self._stages:
            raise TopologyError(f"pipeline {self.name!r} already has a stage {name!r}")
        for topic in spec.own_topics:
            self._topics[topic.name] = topic
        self._stages[name] = spec
        return spec

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
                f"pipeline {self.name!r} has no stage {name!r} (stages: {known})"
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
            if stage.kind == "aggregate":
                counts = {t: self._partitions_of(t) for t in stage.inputs}
                if any(count != stage.partitions for count in counts.values()):
                    raise TopologyError(
                        f"aggregate {stage.name!r} was declared for {stage.partitions} "
                        f"partitions, its inputs now have {counts}",
                        hint="declare topics with pipeline.topic() before the aggregate",
                    )
            names.update(dict.fromkeys(stage.inputs))
            names.update(dict.fromkeys(stage.written_topics))  # none for a sink
        return [
            self._topics.get(
                name, TopicSpec(name, self.default_partitions, dict(self.default_topic_config))
            )
            for name in names
        ]


def _check_aggregate(spec: AggregateSpec, inputs: object, counts: dict[str, int]) -> None:
    """Refuse what an aggregate cannot do, naming the mistake."""
    name = spec.name
    if not _NAME.match(name):
        raise TopologyError(f"aggregate name {name!r} must be letters, digits, '_' or '-'")
    if isinstance(inputs, str):
        raise TopologyError(f"aggregate {name!r}: inputs take a list of topics, not a string")
    if not spec.inputs or not spec.outputs:
        raise TopologyError(f"aggregate {name!r} needs inputs=[...] and outputs=[...]")
    for topic in (*spec.inputs, *spec.outputs):
        _check_topic(topic)
    if set(spec.inputs) & set(spec.outputs):
        raise TopologyError(f"aggregate {name!r} writes to its own input")
    if spec.retry.key_ordered:
        raise TopologyError(
            f"aggregate {name!r}: key-ordered retries are not available on an aggregate",
            hint="a retried record folds into its window if the window is still open and is "
            "late otherwise; drop key_ordered=True from its RetryPolicy",
        )
    _check_aggregate_choices(spec, counts)


def _check_aggregate_choices(spec: AggregateSpec, counts: dict[str, int]) -> None:
    name = spec.name
    if inspect.iscoroutinefunction(spec.fold):
        raise TopologyError(f"aggregate {name!r}: the fold must be a plain function")
    if spec.window is not None and spec.window.grace_ms < 0:
        raise TopologyError(f"aggregate {name!r}: a negative grace")
    if spec.emit not in {"final", "update"} or spec.late not in {"dlq", "drop"}:
        raise TopologyError(f"aggregate {name!r}: emit is final|update, late is dlq|drop")
    if len(set(counts.values())) > 1:
        raise TopologyError(
            f"aggregate {name!r}: its inputs have different partition counts {counts}",
            hint="state is kept per input partition: declare the inputs with one count "
            "(pipeline.topic(name, partitions=N))",
        )


def _result_codec() -> Codec:
    from streams.codecs import json as json_codec  # noqa: PLC0415 - a name taken by the module

    return json_codec(WindowResult)


class WindowResult(BaseModel):
    """The default output value of an aggregate: its key, window and value."""

    key: Any
    start_ms: int
    end_ms: int
    value: Any


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
