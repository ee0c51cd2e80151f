"""Pipeline and StageSpec: declaration rules, derived names, topic specs, load_pipeline."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from streams.codecs import json, raw, text
from streams.exceptions import TopologyError
from streams.pipeline import Pipeline, StageSpec, TopicSpec, load_pipeline
from streams.record import Record


class Order(BaseModel):
    order_id: str


def handle(record: Record[Any]) -> None:
    return None


async def handle_async(record: Record[Any]) -> None:
    return None


# --- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "has space", "dotted.name", "-leading", "slash/name"])
def test_a_bad_pipeline_name_is_rejected(name: str) -> None:
    with pytest.raises(TopologyError, match="pipeline name"):
        Pipeline(name)


@pytest.mark.parametrize("name", ["orders", "Orders_2", "a-b"])
def test_a_good_pipeline_name_is_kept(name: str) -> None:
    assert Pipeline(name).name == name


@pytest.mark.parametrize("name", ["", "has space", "dotted.name", "_leading"])
def test_a_bad_stage_name_is_rejected(name: str) -> None:
    pipeline = Pipeline("orders")

    with pytest.raises(TopologyError, match="stage name"):
        pipeline.add_stage(name, handle, inputs=["in"])
    assert pipeline.stages == []


@pytest.mark.parametrize("topic", ["has space", ".", "..", "x" * 250, "a/b", ""])
def test_a_bad_topic_name_is_rejected_in_inputs_outputs_and_declarations(topic: str) -> None:
    pipeline = Pipeline("orders")

    with pytest.raises(TopologyError, match="topic name"):
        pipeline.add_stage("s1", handle, inputs=[topic])
    with pytest.raises(TopologyError, match="topic name"):
        pipeline.add_stage("s2", handle, inputs=["in"], outputs=[topic])
    with pytest.raises(TopologyError, match="topic name"):
        pipeline.topic(topic)


def test_the_longest_legal_topic_name_is_accepted() -> None:
    name = "x" * 249

    spec = Pipeline("orders").add_stage("s", handle, inputs=[name])

    assert spec.inputs == (name,)


# --- stage rules --------------------------------------------------------------------------------


def test_a_duplicate_stage_is_rejected_and_the_first_kept() -> None:
    pipeline = Pipeline("orders")
    first = pipeline.add_stage("validate", handle, inputs=["a"])

    with pytest.raises(TopologyError, match="already has a stage 'validate'"):
        pipeline.add_stage("validate", handle, inputs=["b"])
    assert pipeline.get("validate") is first


def test_a_stage_without_inputs_is_rejected() -> None:
    with pytest.raises(TopologyError, match="reads no topic"):
        Pipeline("orders").add_stage("s", handle, inputs=[])


def test_a_stage_writing_to_its_own_input_is_rejected() -> None:
    with pytest.raises(TopologyError, match=r"writes to its own input \['b'\]"):
        Pipeline("orders").add_stage("s", handle, inputs=["a", "b"], outputs=["b", "c"])


@pytest.mark.parametrize("concurrency", [0, -1])
def test_concurrency_below_one_is_rejected(concurrency: int) -> None:
    with pytest.raises(TopologyError, match="concurrency must be at least 1"):
        Pipeline("orders").add_stage("s", handle, inputs=["a"], concurrency=concurrency)


def test_concurrency_of_one_is_accepted() -> None:
    spec = Pipeline("orders").add_stage("s", handle, inputs=["a"], concurrency=1)

    assert spec.concurrency == 1


@pytest.mark.parametrize(
    ("inputs", "outputs"),
    [("orders", ["paid"]), (["orders"], "paid")],
    ids=["inputs", "outputs"],
)
def test_a_bare_string_topic_is_not_split_into_one_letter_topics(inputs: Any, outputs: Any) -> None:
    # str is an Iterable[str]: inputs="orders" must not subscribe to "o", "r", "d", ...
    # (a name with a dot is rejected only by accident: "." alone is not a legal topic)
    pipeline = Pipeline("orders")
    try:
        spec = pipeline.add_stage("s", handle, inputs=inputs, outputs=outputs)
    except TopologyError:
        return
    assert spec.inputs == ("orders",)
    assert list(spec.outputs) == ["paid"]


def test_defaults_of_a_stage_declared_with_the_decorator() -> None:
    pipeline = Pipeline("orders")

    @pipeline.stage("validate", inputs=["orders.raw"], outputs=["orders.placed"])
    def validate(record: Record[Any]) -> None:
        return None

    spec = pipeline.get("validate")
    assert spec.handler is validate
    assert spec.pipeline == "orders"
    assert spec.inputs == ("orders.raw",)
    assert spec.input_codec == raw()
    assert spec.key_codec == text()
    assert dict(spec.outputs) == {"orders.placed": raw()}
    assert spec.concurrency == 16
    assert spec.is_async is False


def test_outputs_given_as_a_mapping_keep_their_codecs() -> None:
    codec = json(Order)

    spec = Pipeline("orders").add_stage(
        "s", handle_async, inputs=["a"], outputs={"b": codec, "c": text()}, input=codec, key=raw()
    )

    assert dict(spec.outputs) == {"b": codec, "c": text()}
    assert spec.input_codec == codec
    assert spec.key_codec == raw()
    assert spec.is_async is True


def test_unknown_stage_lookup_names_the_known_stages() -> None:
    pipeline = Pipeline("orders")
    pipeline.add_stage("one", handle, inputs=["a"])
    pipeline.add_stage("two", handle, inputs=["a"])

    with pytest.raises(TopologyError, match=r"has no stage 'three' \(stages: one, two\)"):
        pipeline.get("three")
    with pytest.raises(TopologyError, match=r"\(stages: none\)"):
        Pipeline("empty").get("x")


# --- derived names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [([], None), (["only"], "only"), (["one", "two"], None)],
    ids=["none", "one", "two"],
)
def test_default_output_exists_only_with_exactly_one_output(
    outputs: list[str], expected: str | None
) -> None:
    spec = Pipeline("orders").add_stage("s", handle, inputs=["in"], outputs=outputs)

    assert spec.default_output == expected


def test_group_id_and_transactional_id() -> None:
    spec = Pipeline("orders").add_stage("validate", handle, inputs=["in"])

    assert spec.group_id == "orders.validate"
    assert spec.transactional_id(0) == "orders.validate.0"
    assert spec.transactional_id(7) == "orders.validate.7"


def test_stage_spec_is_immutable() -> None:
    spec = Pipeline("orders").add_stage("validate", handle, inputs=["in"])

    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]
    assert isinstance(spec, StageSpec)


# --- topic specs --------------------------------------------------------------------------------


def test_topic_specs_use_declared_settings_else_the_pipeline_defaults() -> None:
    pipeline = Pipeline("orders", partitions=6, topic_config={"retention.ms": "1000"})
    declared = pipeline.topic("orders.placed", partitions=12, config={"cleanup.policy": "compact"})
    pipeline.add_stage("validate", handle, inputs=["orders.raw"], outputs=[declared])
    pipeline.add_stage("ship", handle, inputs=["orders.placed", "orders.raw"], outputs=["ship"])

    specs = pipeline.topic_specs()

    assert declared == "orders.placed"
    default = {"retention.ms": "1000"}
    assert specs == [
        TopicSpec("orders.raw", 6, default),
        TopicSpec("orders.placed", 12, {"retention.ms": "1000", "cleanup.policy": "compact"}),
        TopicSpec("orders.validate.retry.5s", 6, default),
        TopicSpec("orders.validate.retry.30s", 6, default),
        TopicSpec("orders.validate.retry.5m", 6, default),
        TopicSpec("orders.validate.dlq", 6, default),
        TopicSpec("ship", 6, default),
        TopicSpec("orders.ship.retry.5s", 6, default),
        TopicSpec("orders.ship.retry.30s", 6, default),
        TopicSpec("orders.ship.retry.5m", 6, default),
        TopicSpec("orders.ship.dlq", 6, default),
    ]


def test_a_declared_config_overrides_the_default_for_the_same_key() -> None:
    pipeline = Pipeline("orders", topic_config={"retention.ms": "1000"})
    pipeline.topic("t", config={"retention.ms": "5"})
    pipeline.add_stage("s", handle, inputs=["t"])

    assert pipeline.topic_specs()[0] == TopicSpec("t", 3, {"retention.ms": "5"})


def test_a_declared_topic_without_partitions_takes_the_default_count() -> None:
    pipeline = Pipeline("orders", partitions=4)
    pipeline.topic("t")
    pipeline.add_stage("s", handle, inputs=["t"])

    assert pipeline.topic_specs()[0] == TopicSpec("t", 4, {})


def test_topic_specs_do_not_share_the_default_config_dict() -> None:
    pipeline = Pipeline("orders", topic_config={"a": "1"})
    pipeline.add_stage("s", handle, inputs=["x"], outputs=["y"])

    first, second = pipeline.topic_specs()[:2]

    assert first.config == second.config == {"a": "1"}
    assert first.config is not second.config
    assert first.config is not pipeline.default_topic_config


# --- load_pipeline ------------------------------------------------------------------------------


@pytest.mark.parametrize("reference", ["nocolon", ":pipeline", "module:"])
def test_load_pipeline_needs_module_and_attribute(reference: str) -> None:
    with pytest.raises(TopologyError, match="is not MODULE:PIPELINE") as raised:
        load_pipeline(reference)

    assert "streams.examples.hello:pipeline" in raised.value.hint


def test_load_pipeline_reports_a_module_that_cannot_be_imported() -> None:
    with pytest.raises(TopologyError, match="cannot import 'no_such_module_f3a9'") as raised:
        load_pipeline("no_such_module_f3a9:pipeline")

    assert "run from the folder that holds no_such_module_f3a9.py" in raised.value.hint
    assert isinstance(raised.value.__cause__, ImportError)


def test_load_pipeline_rejects_an_attribute_that_is_not_a_pipeline() -> None:
    with pytest.raises(TopologyError, match=r"is not a Pipeline \(it is a function\)"):
        load_pipeline("streams.pipeline:load_pipeline")
    with pytest.raises(TopologyError, match=r"module 'streams.pipeline' has no attribute 'nope'"):
        load_pipeline("streams.pipeline:nope")


def test_load_pipeline_names_the_pipelines_of_the_module_for_a_mistyped_attribute() -> None:
    with pytest.raises(TopologyError, match="has no attribute 'pipline'") as raised:
        load_pipeline("streams.examples.hello:pipline")

    assert raised.value.hint == "its pipelines: streams.examples.hello:pipeline"


def test_load_pipeline_returns_the_named_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"unit_pipeline_{uuid.uuid4().hex}"
    (tmp_path / f"{module}.py").write_text(
        "from streams.pipeline import Pipeline\npipeline = Pipeline('loaded')\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)

    try:
        loaded = load_pipeline(f"{module}:pipeline")
    finally:
        sys.modules.pop(module, None)

    assert isinstance(loaded, Pipeline)
    assert loaded.name == "loaded"
