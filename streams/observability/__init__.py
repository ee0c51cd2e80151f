"""Monitoring: a Prometheus exporter and a live web dashboard over lag and worker stats.

``streams monitor`` runs a ``Monitor``: see ``server`` (process and HTTP), ``exporter``
(metric names) and ``stats_reader`` (the workers' ``_streams.stats`` topic).
"""

from __future__ import annotations

from streams.observability.exporter import METRIC_NAMES, MetricsExporter, Snapshot
from streams.observability.server import Monitor, pipeline_topology
from streams.observability.stats_reader import StatsReader, WorkerStats

__all__ = [
    "METRIC_NAMES",
    "MetricsExporter",
    "Monitor",
    "Snapshot",
    "StatsReader",
    "WorkerStats",
    "pipeline_topology",
]
