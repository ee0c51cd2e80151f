"""Pipeline.aggregate and Pipeline.faust_stage: what they declare and what they refuse."""

from __future__ import annotations

from typing import Any

import faust
import pytest

from streams.agents.faust_stage import check_faust
from streams.exceptions import TopologyError
from streams.pipeline import Pipeline
from streams.record import Record
from streams.retry import RetryPolicy
from streams.windows import Hopping, Tumbling


def _fold(total: int, record: Record[bytes]) -> int:
    return total + len(record.value)


def test_an_aggregate_declares_its_changelog_retry_and_dlq_with_the_inputs_partitions() -> None:
    pipeline = Pipeline("p", partitions=3)
    pipeline.topic("in", partitions=6)
    pipeline.aggregate("s", inputs=["in"], outputs=["out"], initial=0, window=Tumbling(60))(_fold)
    spec = pipeline.component("s")
    assert spec.kind == "aggregate"
    topics = {t.name: t for t in pipeline.topic_specs()}
    assert topics["p.s.changelog"].partitions == 6
    assert topics["p.s.changelog"].config == {"cleanup.policy": "compact"}
    assert topics["p.s.retry.5s"].partitions == 6
    assert topics["p.s.dlq"].partitions == 6
    assert topics["out"].partitions == 3  # outputs are not keyed by the state
    assert spec.state_topics == ["p.s.changelog"]
    assert spec.lag_topics == ["in", "p.s.retry.5s", "p.s.retry.30s", "p.s.retry.5m"]
    assert spec.repartition_topic is None
    assert spec.initial() == 0


def test_a_key_function_adds_the_repartition_topic() -> None:
    pipeline = Pipeline("p")
    pipeline.aggregate("s", inputs=["in"], outputs=["out"], initial=list, key=lambda r: r.key)(
        _fold
    )
    spec = pipeline.component("s")
    assert spec.kind == "aggregate"
    assert spec.repartition_topic == "p.s.repartition"
    assert "p.s.repartition" in spec.subscriptions
    assert spec.fold_topics[0] == "p.s.repartition"
    assert spec.initial() == []  # a callable is called per new key


def test_refused_key_ordered_retries() -> None:
    with pytest.raises(TopologyError, match="key-ordered"):
        Pipeline("p").aggregate(
            "s", inputs=["in"], outputs=["out"], initial=0, retry=RetryPolicy(key_ordered=True)
        )(_fold)


def test_refused_inputs_with_different_partition_counts() -> None:
    pipeline = Pipeline("p", partitions=4)
    pipeline.topic("a", partitions=2)
    with pytest.raises(TopologyError, match="partition counts"):
        pipeline.aggregate("s", inputs=["a", "b"], outputs=["out"], initial=0)(_fold)


def test_refused_a_later_partition_change_of_an_input() -> None:
    pipeline = Pipeline("p", partitions=4)
    pipeline.aggregate("s", inputs=["a"], outputs=["out"], initial=0)(_fold)
    pipeline.topic("a", partitions=8)
    with pytest.raises(TopologyError, match="declared for 4 partitions"):
        pipeline.topic_specs()


def test_refused_a_negative_grace_and_an_async_fold() -> None:
    with pytest.raises(TopologyError, match="grace"):
        Tumbling(10, grace_s=-1)

    async def fold(total: int, record: Record[bytes]) -> int:
        return total

    with pytest.raises(TopologyError, match="plain function"):
        Pipeline("p").aggregate("s", inputs=["in"], outputs=["out"], initial=0)(fold)


def test_refused_a_hopping_step_longer_than_its_size() -> None:
    with pytest.raises(TopologyError, match="step"):
        Hopping(10, 20)
    Hopping(10, 10)  # equal: a tumbling window, accepted


@pytest.mark.parametrize(
    ("choices", "words"),
    [
        ({"emit": "always"}, "emit is final"),
        ({"late": "keep"}, "late is dlq"),
    ],
)
def test_refused_an_unknown_emit_or_late_choice(choices: dict[str, Any], words: str) -> None:
    with pytest.raises(TopologyError, match=words):
        Pipeline("p").aggregate("s", inputs=["in"], outputs=["out"], initial=0, **choices)(_fold)


def test_refused_an_aggregate_writing_to_its_own_input() -> None:
    with pytest.raises(TopologyError, match="its own input"):
        Pipeline("p").aggregate("s", inputs=["in"], outputs=["in"], initial=0)(_fold)


_ACCEPTED: dict[str, Any] = {
    "broker": "kafka://127.0.0.1:1",
    "processing_guarantee": "exactly_once",
}


def _faust_app(app_id: str, **settings: Any) -> tuple[Any, Any]:
    app = faust.App(app_id, store="memory://", web_enabled=False, **settings)
    topic = app.topic("fin", value_type=bytes)
    app.Table("counts", default=int, partitions=4)

    async def agent(stream: Any) -> None:
        async for _event in stream:
            pass

    return app, app.agent(topic, name=f"{app_id}-agent")(agent)


def test_a_faust_stage_declares_the_topics_faust_would_create() -> None:
    app, agent = _faust_app("p.f", **_ACCEPTED)
    pipeline = Pipeline("p", partitions=4)
    spec = pipeline.faust_stage("f", app=app, agent=agent, outputs=["fout"])
    names = {t.name: t for t in pipeline.topic_specs()}
    assert spec.inputs == ("fin",)
    assert names["p.f-counts-changelog"].config == {"cleanup.policy": "compact"}
    assert names["p.f-__assignor-__leader"].partitions == 1
    assert "p.f.dlq" in names
    assert "fout" in names
    check_faust(spec)  # exactly_once, kafka://, faust 0.15: accepted


def test_a_faust_app_whose_id_is_not_the_group_is_refused() -> None:
    app, agent = _faust_app("other", broker="kafka://127.0.0.1:1")
    with pytest.raises(TopologyError, match="not the stage's group"):
        Pipeline("p").faust_stage("f", app=app, agent=agent)


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"broker": "kafka://127.0.0.1:1"}, "processing_guarantee"),
        (
            {"broker": "confluent://127.0.0.1:1", "processing_guarantee": "exactly_once"},
            "not kafka://",
        ),
    ],
)
def test_a_faust_configuration_the_adapter_cannot_honour_is_refused(
    settings: dict[str, Any], words: str
) -> None:
    app, agent = _faust_app("p.f", **settings)
    spec = Pipeline("p").faust_stage("f", app=app, agent=agent)
    with pytest.raises(TopologyError, match=words):
        check_faust(spec)


def test_a_faust_version_outside_the_tested_range_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, agent = _faust_app("p.f", **_ACCEPTED)
    spec = Pipeline("p").faust_stage("f", app=app, agent=agent)
    monkeypatch.setattr("streams.agents.faust_stage.version", lambda _name: "0.16.0")
    with pytest.raises(TopologyError, match="outside the tested range"):
        check_faust(spec)
