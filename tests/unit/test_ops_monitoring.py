"""ops/prometheus.yml scrapes the monitor; the Grafana dashboard queries only metrics it emits."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from streams.observability.exporter import METRIC_NAMES

OPS = Path(__file__).resolve().parents[2] / "ops"
# identifiers in a PromQL expression that are functions, keywords or label names, not metrics
_NOT_METRICS = {"sum", "max", "min", "avg", "rate", "by", "without", "time", "on", "ignoring"}


def _metrics_in(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', "", expr)
    without_labels = re.sub(r"\{[^}]*\}", "", without_strings)
    without_groupings = re.sub(r"\b(by|without)\s*\([^)]*\)", "", without_labels)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_groupings)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_ranges))
    return names - _NOT_METRICS


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((OPS / "grafana" / "streams-dashboard.json").read_text())
    return loaded


def test_prometheus_scrapes_the_monitor_every_15_seconds() -> None:
    config = yaml.safe_load((OPS / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "streams-monitor"]
    assert job["scrape_interval"] == "15s"
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9308"]


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    queried: set[str] = set()
    for panel in _dashboard()["panels"]:
        for target in panel["targets"]:
            queried |= _metrics_in(target["expr"])
    for variable in _dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            # label_values(<selector>, <label>): the selector names the metric
            selector = re.fullmatch(r"label_values\((.*),\s*\w+\)", variable["query"])
            assert selector is not None, variable["query"]
            queried |= _metrics_in(selector.group(1))
    assert queried, "the dashboard queries nothing"
    assert queried <= set(METRIC_NAMES), sorted(queried - set(METRIC_NAMES))


def test_dashboard_covers_lag_status_throughput_retries_dlq_and_breakers() -> None:
    exprs = " ".join(t["expr"] for p in _dashboard()["panels"] for t in p["targets"])
    for needed in (
        "kafka_consumergroup_group_sum_lag",
        "kafka_consumergroup_group_max_lag_seconds",
        "streams_group_status",
        "streams_stage_consumed_total",
        "streams_stage_retried_total",
        "streams_stage_dead_lettered_total",
        "streams_stage_dlq_depth",
        "streams_dependency_breaker_state",
    ):
        assert needed in exprs


def test_metrics_in_ignores_functions_labels_and_ranges() -> None:
    expr = 'sum by (group) (rate(streams_stage_consumed_total{group=~"a|b"}[1m])) == 1'
    assert _metrics_in(expr) == {"streams_stage_consumed_total"}
