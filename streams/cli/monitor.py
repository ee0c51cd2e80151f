"""`streams monitor [--pipeline MODULE:PIPELINE]...`: Prometheus exporter and live dashboard."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click

from streams.cli.output import fail_cleanly, say
from streams.exceptions import ConfigError
from streams.lag.scale import DEFAULT_RECORDS_PER_REPLICA
from streams.observability.server import Monitor
from streams.pipeline import load_pipeline
from streams.runtime.logs import configure_logging

__all__ = ["monitor"]


@click.command()
@click.option(
    "--pipeline",
    "pipelines",
    multiple=True,
    help="MODULE:PIPELINE to draw on the dashboard (repeatable); every group is exported anyway.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9308, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--interval",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0.5, 3600),
    help="Seconds between two samples of Kafka (a scrape never queries Kafka).",
)
@click.option(
    "--cluster-name", default="default", show_default=True, help="Value of label cluster_name."
)
@click.option(
    "--scale-records-per-replica",
    default=DEFAULT_RECORDS_PER_REPLICA,
    show_default=True,
    type=click.IntRange(1),
    help="Backlog (lag + due retries) one replica should work off: the divisor of "
    "/api/scale/<group>'s suggested_replicas.",
)
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@fail_cleanly
def monitor(  # noqa: PLR0917 - click passes every option by keyword
    pipelines: tuple[str, ...],
    host: str,
    port: int,
    interval: float,
    cluster_name: str,
    scale_records_per_replica: int,
    log_format: str,
) -> None:
    """Serve /metrics (Prometheus), / (dashboard), /api/state, /api/scale/<group> (the
    autoscaling signal of a stage of the --pipeline pipelines) and /health until Ctrl-C."""
    declared = [load_pipeline(reference) for reference in pipelines]
    configure_logging(log_format, prefix="monitor")
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with Monitor(
        declared,
        interval_s=interval,
        cluster_name=cluster_name,
        records_per_replica=scale_records_per_replica,
    ) as running:
        try:
            running.start(host, port)
        except OSError as error:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {error}",
                hint="pick another --port, or stop what listens there",
            ) from error
        say(f"dashboard {running.url}/   metrics {running.url}/metrics")
        stop.wait()
