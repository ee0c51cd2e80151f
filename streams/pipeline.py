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
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from pydantic import BaseModel

from streams.codecs import Codec, raw, text
from streams.exceptions import TopologyError
from streams.record import Record
from streams.retry import RetryPolicy
from streams.spec import (
    INTERNAL_TOPICS,
    REPLAY_LEDGER_TOPIC,
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
    "REPLAY_LEDGER_TOPIC",
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

    def codecs_of(self, topic: str, *, stage: str | None = None) -> tuple[Codec, Codec]:
        """(value codec, key codec) of ``topic`` as the pipeline declares it.

        With ``stage``: that stage's input codecs, whatever the topic (to write or read records
        as the stage reads them). Else the codecs of the stage that reads ``topic``, or of the
        one that writes it; a stage's retry and DLQ topics hold its input records, so they take
        its input codecs. A TopologyError names the topics it knows otherwise.
        """
        if stage is not None:
            chosen = self.component(stage)
            return chosen.input_codec, chosen.key_codec
        for component in self._stages.values():
            routed = [*component.retry_topics, component.dlq_topic]
            if topic in component.inputs or topic in routed:
                return component.input_codec, component.key_codec
        for component in self._stages.values():
            if topic in component.outputs:
                return component.outputs[topic], component.key_codec
        known = ", ".join(spec.name for spec in self.topic_specs()) or "none"
        raise TopologyError(
            f"pipeline {self.name!r} does not read or write topic {topic!r} (its topics: {known})",
            hint="give --stage S to use the codecs of that stage's input",
        )

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
    """Import ``module:attribute`` and return the Pipeline it names.

    The module is looked up in the working directory first, then on the Python path, as
    ``python -m`` does for the worker processes, so that the command line and the workers find
    the same module. Every failure is a TopologyError of one line with a hint: a module that is
    not there, a module that raised while it was imported (where, and how to see the
    traceback), an attribute that is not a Pipeline (and the pipelines the module has).
    """
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise TopologyError(
            f"{reference!r} is not MODULE:PIPELINE",
            hint="name the module and the pipeline variable, e.g. streams.examples.hello:pipeline",
        )
    if module_name.endswith(".py") or "/" in module_name:
        dotted = module_name.removesuffix(".py").removeprefix("./").replace("/", ".")
        raise TopologyError(
            f"{reference!r} names a file, not a module",
            hint=f"give the module's dotted name, without .py: {dotted}:{attribute}",
        )
    module = _import(module_name)
    found = getattr(module, attribute, None)
    if isinstance(found, Pipeline):
        return found
    declared = sorted(name for name, value in vars(module).items() if isinstance(value, Pipeline))
    problem = (
        f"module {module_name!r} has no attribute {attribute!r}"
        if not hasattr(module, attribute)
        else f"{reference!r} is not a Pipeline (it is {_a(type(found).__name__)})"
    )
    if declared:
        hint = "its pipelines: " + ", ".join(f"{module_name}:{name}" for name in declared)
    else:
        hint = f"{module_name} declares no Pipeline at module level (pipeline = Pipeline(...))"
    raise TopologyError(problem, hint=hint)


def _import(module_name: str) -> ModuleType:
    """Import a pipeline's module, the working directory first; errors name what to do."""
    here = Path.cwd()
    if not any(_same_folder(entry, here) for entry in sys.path):
        sys.path.insert(0, str(here))
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and _is_part_of(module_name, error.name):
            raise TopologyError(
                f"cannot import {module_name!r}: no module {error.name!r} in {here} "
                "or on the Python path",
                hint=f"run from the folder that holds {_file_of(error.name)}, set PYTHONPATH to "
                "that folder, or pip install the project that has it",
            ) from error
        raise _import_failed(module_name, error) from error
    except Exception as error:  # the user's module may raise anything at import
        raise _import_failed(module_name, error) from error


def _import_failed(module_name: str, error: BaseException) -> TopologyError:
    """The one-line report of a module that raised while it was imported."""
    where = _location(error)
    text = error.msg if isinstance(error, SyntaxError) else str(error)
    message = f"importing {module_name!r} failed: {type(error).__name__}: {text}"
    if isinstance(error, ModuleNotFoundError) and error.name:
        hint = (
            f"{module_name} imports {error.name!r}, which is not installed in this environment "
            f"({sys.prefix}): pip install it there"
        )
    else:
        hint = f"the error is in your code; `python -c 'import {module_name}'` shows the traceback"
    return TopologyError(message + (f" ({where})" if where else ""), hint=hint)


def _location(error: BaseException) -> str:
    """``file.py, line N`` of the innermost frame outside the import machinery."""
    if isinstance(error, SyntaxError) and error.filename:
        return f"{_shown(error.filename)}, line {error.lineno}"
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if not frame.filename.startswith("<frozen ") and frame.filename != __file__
    ]
    if not frames:
        return ""
    return f"{_shown(frames[-1].filename)}, line {frames[-1].lineno}"


def _shown(filename: str) -> str:
    path = Path(filename)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return filename


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _file_of(module_name: str) -> str:
    path = module_name.replace(".", "/")
    return f"{path}.py" if "." in module_name else f"{path}.py or {path}/"


def _same_folder(entry: str, folder: Path) -> bool:
    try:
        return Path(entry or ".").resolve() == folder.resolve()
    except OSError:
        return False


def _is_part_of(module_name: str, missing: str) -> bool:
    """True if ``missing`` is ``module_name`` or one of its parent packages."""
    return module_name == missing or module_name.startswith(missing + ".")
