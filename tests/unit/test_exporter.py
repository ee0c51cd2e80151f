"""The monitor without a broker: metrics rendering, worker stats, topology, state and HTTP."""
# ruff: noqa: ARG002 - the fakes keep the signatures of the real LagMonitor and StatsReader

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.examples.hello import pipeline as hello
from streams.lag import (
    GroupLag,
    GroupSnapshot,
    Owner,
    PartitionLag,
    PipelineView,
    ReplayMark,
    StageView,
    Status,
)
from streams.lag.fetch import members_of
from streams.lag.scale import ScaleSignal
from streams.observability.exporter import METRIC_NAMES, MetricsExporter, Snapshot
from streams.observability.server import Monitor, pipeline_topology
from streams.observability.stats_reader import (
    WorkerStats,
    _supervisor_report,
    live_workers,
    parse_worker_stats,
)
from streams.pipeline import Pipeline
from streams.stats import SlotReport, SupervisorReport


def _partition(
    group: str,
    topic: str,
    partition: int,
    committed: int | None,
    end: int,
    *,
    owner: Owner | None = None,
) -> PartitionLag:
    lag = None if committed is None else end - committed
    return PartitionLag(
        group=group,
        topic=topic,
        partition=partition,
        committed=committed,
        log_start=2,
        high_watermark=end + 1,
        last_stable_offset=end,
        lag=lag,
        pending_transactional=1,
        lag_seconds=None if not lag else 4.5,
        lag_seconds_method=None if not lag else "read",
        velocity=None,
        eta_seconds=None,
        status=Status.OK,
        rule="test",
        data_loss=False,
        hanging_transaction=False,
        owner=owner,
    )


def _group(name: str, parts: tuple[PartitionLag, ...], status: Status = Status.OK) -> GroupLag:
    lags = [p.lag for p in parts if p.lag is not None]
    return GroupLag(
        group=name,
        state="Stable",
        members=1,
        partitions=parts,
        status=status,
        rule="test",
        sum_lag=sum(lags),
        max_lag=max(lags, default=0),
        max_lag_seconds=4.5,
    )


def _view(pipeline: Pipeline, lag: int) -> PipelineView:
    return PipelineView(
        pipeline=pipeline.name,
        stages=tuple(
            StageView(
                group=stage.group_id,
                input_lag=lag,
                input_lag_seconds=1.5,
                retry_backlog={f"{stage.group_id}.retry.5s": 3},
                dlq_depth=2,
                dlq_inflow_per_s=None,
                status=Status.WARN,
                rule="test",
            )
            for stage in pipeline.stages
        ),
        end_to_end_lag_seconds=3.0,
    )


WORKER = WorkerStats(
    group="hello.validate",
    slot="0",
    ts_ms=1_000_000,
    counters={
        "consumed": 120,
        "produced": 118,
        "retried": 1,
        "dead_lettered": 1,
        "parked": 0,
        "transactions_committed": 7,
        "transactions_aborted": 2,
        "consumed_per_s": 12.5,
    },
    dependencies=({"name": "prices", "state": "half_open"},),
)


REDRIVE = ReplayMark("redrive-1", "redrive", "RUNNING", 7, 70, 999_000, 1_000_000)


SUPERVISOR = SupervisorReport(
    group="hello.validate",
    desired=2,
    running=1,
    slots=(
        SlotReport(0, "running"),
        SlotReport(1, "down", 5, 0, "exited 5 (cannot start)"),
    ),
    ts_ms=1_000_000,
    host="box",
    pid=7,
)


def _snapshot() -> Snapshot:
    parts = (
        _partition("g1", "in", 0, 10, 25, owner=Owner("10.0.0.1", "member-1", "client-a")),
        _partition("g1", "in", 1, None, 5),
    )
    return Snapshot(
        taken_at=1000.0,
        cluster_name="c1",
        # a redrive into g1's input: streams_group_replay_active (it does not explain a STALL)
        groups=(replace(_group("g1", parts, Status.STALL), replay=(REDRIVE,)),),
        views=(_view(hello, 7),),
        workers=(WORKER,),
        sample_seconds=0.25,
        scale=(
            ScaleSignal(
                group="hello.price",
                lag=7,
                retry_due=4,
                retry_not_due=9,
                partitions=4,
                breaker_open=False,
                current_replicas=1,
                suggested_replicas=1,
                reason="test",
            ),
        ),
    )


def _families(body: bytes) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def _sample(families: dict[str, Any], name: str, **labels: str) -> float:
    family_name = name.removesuffix("_total")
    for sample in families[family_name].samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    raise AssertionError(f"no sample {name} {labels}")


def test_lag_metrics_use_kafka_lag_exporter_names_and_labels() -> None:
    families = _families(MetricsExporter(_snapshot).render())
    labels = {"cluster_name": "c1", "group": "g1", "topic": "in", "partition": "0"}
    assert _sample(families, "kafka_consumergroup_group_lag", **labels) == 15
    owned = [
        s for s in families["kafka_consumergroup_group_lag"].samples if s.labels["partition"] == "0"
    ]
    assert owned[0].labels == {
        **labels,
        "member_host": "10.0.0.1",
        "consumer_id": "member-1",
        "client_id": "client-a",
    }
    assert _sample(families, "kafka_consumergroup_group_lag_seconds", **labels) == 4.5
    # no commit: NaN, as kafka-lag-exporter, never -1 nor the whole log
    assert math.isnan(_sample(families, "kafka_consumergroup_group_lag", partition="1"))
    assert (
        _sample(families, "kafka_consumergroup_group_sum_lag", cluster_name="c1", group="g1") == 15
    )
    assert _sample(families, "kafka_consumergroup_group_max_lag", group="g1") == 15
    assert _sample(families, "kafka_consumergroup_group_max_lag_seconds", group="g1") == 4.5
    assert _sample(families, "kafka_partition_latest_offset", topic="in", partition="0") == 26
    assert _sample(families, "kafka_partition_earliest_offset", topic="in", partition="0") == 2
    assert _sample(families, "kafka_consumergroup_poll_time_ms", cluster_name="c1") == 250


def test_status_is_one_for_the_current_status_only() -> None:
    families = _families(MetricsExporter(_snapshot).render())
    values = {
        s.labels["status"]: s.value
        for s in families["streams_group_status"].samples
        if s.labels["group"] == "g1"
    }
    assert values == {"OK": 0, "WARN": 0, "STALL": 1, "STOP": 0, "REWIND": 0, "ERR": 0}


def test_worker_and_pipeline_metrics() -> None:
    families = _families(MetricsExporter(_snapshot).render())
    worker = {"group": "hello.validate", "slot": "0"}
    assert _sample(families, "streams_stage_consumed_total", **worker) == 120
    assert _sample(families, "streams_stage_transactions_aborted_total", **worker) == 2
    assert _sample(families, "streams_stage_consumed_per_second", **worker) == 12.5
    assert _sample(families, "streams_dependency_breaker_state", dependency="prices") == 1
    assert _sample(families, "streams_partition_pending_transactional", partition="0") == 1
    assert _sample(families, "streams_stage_dlq_depth", group="hello.price") == 2
    assert _sample(families, "streams_stage_retry_backlog", topic="hello.price.retry.5s") == 3
    assert _sample(families, "streams_pipeline_end_to_end_lag_seconds", pipeline="hello") == 3
    assert _sample(families, "streams_stage_suggested_replicas", group="hello.price") == 1
    assert _sample(families, "streams_stage_retry_due", group="hello.price") == 4
    assert _sample(families, "streams_stage_retry_not_due", group="hello.price") == 9


def test_metric_names_list_is_exactly_what_a_scrape_contains() -> None:
    families = _families(MetricsExporter(_snapshot).render())
    emitted = {s.name for f in families.values() for s in f.samples}
    assert emitted == set(METRIC_NAMES)


def test_no_snapshot_renders_an_empty_page() -> None:
    assert MetricsExporter(lambda: None).render() == b""


def test_render_is_cached_per_snapshot() -> None:
    snapshot = _snapshot()
    exporter = MetricsExporter(lambda: snapshot)
    assert exporter.render() is exporter.render()


def test_member_owners_from_the_one_group_description() -> None:
    tp = SimpleNamespace(topic="in", partition=3)
    member = SimpleNamespace(
        host="/10.1.1.1",
        member_id="m-1",
        client_id="c",
        assignment=SimpleNamespace(topic_partitions=[tp]),
    )
    idle = SimpleNamespace(host="h", member_id="m-2", client_id="c", assignment=None)
    (members,) = members_of([SimpleNamespace(group_id="g", members=[member, idle])]).values()
    found = {m.member_id: m.assignment for m in members}
    assert found == {"m-1": (("in", 3),), "m-2": ()}
    owners = GroupSnapshot("g", "Stable", members).owners
    assert owners == {("in", 3): Owner("10.1.1.1", "m-1", "c")}


def test_parse_worker_stats_keeps_numbers_and_dependencies() -> None:
    payload = {
        "stage": "p.s",
        "group": "p.s",
        "slot": 2,
        "consumed": 5,
        "ts_ms": 1234,
        "pid": 99,
        "host": "box",
        "dependencies": [{"name": "api", "state": "open"}],
    }
    stats = parse_worker_stats("p.s/2", json.dumps(payload).encode())
    assert stats is not None
    assert (stats.group, stats.slot, stats.ts_ms, stats.pid, stats.host) == (
        "p.s",
        "2",
        1234,
        99,
        "box",
    )
    assert stats.counters == {"consumed": 5.0}
    assert stats.dependencies == ({"name": "api", "state": "open"},)
    assert parse_worker_stats("x/0", b"not json") is None
    assert parse_worker_stats("x/0", b"[1]") is None


def test_stale_workers_are_dropped() -> None:
    fresh = WorkerStats("g", "0", ts_ms=100_000, counters={})
    stale = WorkerStats("g", "1", ts_ms=80_000, counters={})
    slow = WorkerStats("g", "2", ts_ms=50_000, counters={"stats_interval_s": 30})
    kept = live_workers([stale, fresh, slow], now_s=100.0, stale_after_s=15)
    assert [w.slot for w in kept] == ["0", "2"]


def test_topology_orders_stages_by_topic() -> None:
    topology = pipeline_topology(hello)
    layers = {s["name"]: s["layer"] for s in topology["stages"]}
    assert layers == {"validate": 0, "price": 1}
    assert topology["edges"] == [
        {"from": "validate", "to": "price", "topic": "hello.orders.placed"}
    ]
    assert topology["stages"][0]["external_inputs"] == ["hello.orders.raw"]


class FakeLag:
    def __init__(self) -> None:
        self.committed = 10
        self.fail: Exception | None = None
        self.closed = False
        self.reconnects = 0
        self.supervisors_seen: list[SupervisorReport] = []

    def sample(
        self,
        groups: Iterable[str] | None = None,
        *,
        topics: Mapping[str, Iterable[str]] | None = None,
    ) -> list[GroupLag]:
        if self.fail is not None:
            raise self.fail
        parts = (_partition("hello.validate", "hello.orders.raw", 0, self.committed, 100),)
        other = (_partition("other", "x", 0, 1, 2),)
        return [_group("hello.validate", parts), _group("other", other, Status.WARN)]

    def pipeline_view(
        self,
        pipeline: Pipeline,
        groups: list[GroupLag] | None = None,
        *,
        supervisors: Iterable[SupervisorReport] = (),
    ) -> PipelineView:
        self.supervisors_seen = list(supervisors)
        return _view(pipeline, 100 - self.committed)

    def reconnect(self) -> None:
        self.reconnects += 1

    def close(self) -> None:
        self.closed = True


class FakeStats:
    def __init__(self) -> None:
        self.closed = False
        self.reconnects = 0

    def reconnect(self) -> None:
        self.reconnects += 1

    def poll(self, timeout_s: float = 0.2) -> int:
        return 0

    def workers(self) -> list[WorkerStats]:
        return [WORKER]

    def supervisors(self) -> list[SupervisorReport]:
        return [SUPERVISOR]

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def monitor() -> Iterator[tuple[Monitor, FakeLag, Clock]]:
    lag, clock = FakeLag(), Clock()
    running = Monitor(
        [hello],
        lag=lag,
        stats=FakeStats(),
        clock=clock,
        interval_s=3600,
    )
    yield running, lag, clock
    running.close()
    assert lag.closed


def test_state_has_groups_pipelines_workers_and_history(
    monitor: tuple[Monitor, FakeLag, Clock],
) -> None:
    running, lag, clock = monitor
    running.sample_once()
    clock.now += 10
    lag.committed = 60
    running.sample_once()
    state = json.loads(running.state())
    assert [g["group"] for g in state["groups"]] == ["hello.validate", "other"]
    assert [g["in_pipeline"] for g in state["groups"]] == [True, False]
    assert state["groups"][0]["partitions"][0]["lag"] == 40
    (pipeline,) = state["pipelines"]
    assert [s["name"] for s in pipeline["stages"]] == ["validate", "price"]
    stage = pipeline["stage_state"]["hello.validate"]
    assert stage["status"] == "WARN"
    assert stage["lag"] == 40
    assert stage["throughput"] == 5.0  # 50 records committed in 10 s
    assert stage["workers"] == 1
    assert stage["breakers"] == [["prices", "half_open"]]
    assert (stage["replay"], stage["explained_by"]) == ([], None)  # no task affects it
    assert (state["groups"][1]["replay"], state["groups"][1]["explained_by"]) == ([], None)
    assert state["history"]["hello.validate"]["lag"] == [90, 40]
    assert state["history"]["hello.validate"]["throughput"] == [None, 5.0]
    assert state["workers"][0]["consumed"] == 120
    light = json.loads(running.state(partitions=False))
    assert "partitions" not in light["groups"][0]
    assert light["groups"][0]["partition_count"] == 1


def test_a_failed_sample_keeps_the_last_one(monitor: tuple[Monitor, FakeLag, Clock]) -> None:
    running, lag, _ = monitor
    good = running.sample_once()
    lag.fail = RuntimeError("broker down")
    failed = running.sample_once()
    assert failed.groups == good.groups
    assert failed.errors == 1
    state = json.loads(running.state())
    assert state["error"] == "broker down"
    families = _families(running.exporter.render())
    assert _sample(families, "streams_monitor_sample_errors_total") == 1


def test_a_failed_sample_never_has_an_empty_error_and_rebuilds_the_clients(
    monitor: tuple[Monitor, FakeLag, Clock],
) -> None:
    """After a broker restart every sample failed with TimeoutError(), whose str() is ''."""
    running, lag, _ = monitor
    running.sample_once()
    lag.fail = TimeoutError()
    failed = running.sample_once()
    assert failed.error == "TimeoutError: TimeoutError()"
    assert json.loads(running.state())["error"] == "TimeoutError: TimeoutError()"
    assert lag.reconnects == 1
    assert isinstance(running._stats, FakeStats)
    assert running._stats.reconnects == 1
    lag.fail = RuntimeError("broker down")
    assert running.sample_once().error == "broker down"  # a message of its own is kept as is
    assert lag.reconnects == 2


def test_a_first_sample_that_fails_is_not_fresh(monitor: tuple[Monitor, FakeLag, Clock]) -> None:
    running, lag, _ = monitor
    lag.fail = RuntimeError("broker down")
    failed = running.sample_once()
    assert failed.taken_at == 0.0
    assert json.loads(running.state())["taken_at"] == 0.0


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback test URL
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read()


def test_http_endpoints(monitor: tuple[Monitor, FakeLag, Clock]) -> None:
    running, _, _ = monitor
    running.start("127.0.0.1", 0)
    status, kind, body = _get(running.url + "/metrics")
    assert status == 200
    assert kind.startswith("text/plain")
    assert b'kafka_consumergroup_group_lag{client_id=""' in body
    status, kind, body = _get(running.url + "/api/state?partitions=0")
    assert (status, kind) == (200, "application/json")
    assert json.loads(body)["pipelines"][0]["name"] == "hello"
    assert _get(running.url + "/health")[0] == 200
    status, kind, body = _get(running.url + "/")
    assert status == 200
    assert b'<script src="app.js">' in body
    assert _get(running.url + "/app.js")[0] == 200
    assert _get(running.url + "/style.css")[0] == 200
    assert _get(running.url + "/../pyproject.toml")[0] == 404


def test_health_is_503_with_the_reason_once_the_data_is_older_than_three_intervals(
    monitor: tuple[Monitor, FakeLag, Clock],
) -> None:
    running, lag, clock = monitor
    running.start("127.0.0.1", 0)  # the first sample, at t = 1000
    assert _get(running.url + "/health") == (200, "text/plain; charset=utf-8", b"ok\n")
    snapshot = running.snapshot
    assert snapshot is not None
    limit = 3 * (3600 + snapshot.sample_seconds)
    clock.now = 1000 + limit  # exactly three intervals: still fresh
    assert _get(running.url + "/health")[0] == 200
    clock.now = 1000 + limit + 1
    status, kind, body = _get(running.url + "/health")
    assert (status, kind) == (503, "application/json")
    answer = json.loads(body)
    assert answer["status"] == "stale"
    assert answer["age_s"] == round(limit + 1, 1)
    assert answer["reason"].startswith(f"the last successful sample is {limit + 1:.1f} s old")
    # a failed sample does not make old data fresh, and says why it failed
    lag.fail = RuntimeError("broker down")
    running.sample_once()
    status, _, body = _get(running.url + "/health")
    assert status == 503
    assert json.loads(body)["last_error"] == "broker down"
    state = json.loads(_get(running.url + "/api/state")[2])
    assert state["stale_after_s"] == limit


def test_health_is_503_before_any_successful_sample(
    monitor: tuple[Monitor, FakeLag, Clock],
) -> None:
    running, lag, _ = monitor
    lag.fail = RuntimeError("broker down")
    running.start("127.0.0.1", 0)
    status, _, body = _get(running.url + "/health")
    assert status == 503
    answer = json.loads(body)
    assert (answer["reason"], answer["age_s"], answer["last_error"]) == (
        "no successful sample yet",
        None,
        "broker down",
    )


def test_the_supervisors_records_reach_the_views_and_the_state(
    monitor: tuple[Monitor, FakeLag, Clock],
) -> None:
    running, lag, _ = monitor
    running.sample_once()
    assert lag.supervisors_seen == [SUPERVISOR]
    state = json.loads(running.state())
    assert state["supervisors"] == [SUPERVISOR.to_json()]


def test_supervisor_records_are_not_workers_and_go_stale_after_three_intervals() -> None:
    payload = json.dumps(SUPERVISOR.to_json()).encode()
    assert parse_worker_stats("hello.validate/supervisor@box:7", payload) is None
    assert _supervisor_report(payload) == SUPERVISOR
    assert _supervisor_report(b"not json") is None
    assert _supervisor_report(json.dumps({"kind": "supervisor"}).encode()) is None
    # interval 5 s: live for 15 s after ts_ms, then ignored like a stale worker
    assert SUPERVISOR.is_live(1000.0 + 15.0)
    assert not SUPERVISOR.is_live(1000.0 + 15.1)
