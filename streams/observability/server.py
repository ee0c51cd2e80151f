"""The monitor process: a sampler thread and an HTTP server over its latest sample.

Every ``interval_s`` the sampler asks the lag monitor for every consumer group (each marked
with the replay tasks affecting it, from the ledger ``_streams.replay``), reads the workers'
counters and the supervisors' records from ``_streams.stats``, and builds the views of the
given pipelines (a stage below its desired worker count is WARN, ERR with none left); the
result is one immutable ``Snapshot``, swapped whole. The HTTP server only reads that snapshot:

- ``/metrics``: Prometheus text (``streams.observability.exporter``);
- ``/api/state``: JSON for the dashboard (``?partitions=0`` leaves out the partitions);
- ``/``: the dashboard (static files, no build step, nothing fetched from the internet);
- ``/api/scale/<group>``: the autoscaling signal of a stage of the given pipelines
  (``streams.observability.scaling``, the formula in ``streams.lag.scale``): 200 with
  ``group, lag, retry_due, retry_not_due, partitions, breaker_open, current_replicas,
  suggested_replicas, reason``; 404 with a JSON ``error`` for a group no stage has; 503 with
  the last known values and an ``error`` while the last sample failed or the data is stale
  (an autoscaler then keeps its replicas or uses its fallback: it never waits on Kafka);
- ``/health``: 200 (``ok``) while the data is fresh; 503 with a JSON body saying why and how
  old the data is once the last *successful* sample is older than three intervals (an interval
  being ``interval_s`` plus the time the last sample took), or when there was none yet. Point a
  liveness or alerting probe here: a monitor that serves old numbers is not healthy.

When Kafka cannot be reached the last good sample is kept, ``error`` in ``/api/state`` says
why (never an empty string), and ``streams_monitor_sample_errors_total`` grows: check the
bootstrap servers and the broker. After every failed sample the monitor builds new Kafka
clients (admin client, record readers, the stats reader), so it picks up again by itself once
the broker answers, also after a broker restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self
from urllib.parse import parse_qs, unquote, urlsplit

from streams.config import KafkaSettings
from streams.lag import LagMonitor, lag_hints
from streams.lag.scale import DEFAULT_RECORDS_PER_REPLICA
from streams.observability.exporter import MetricsExporter, Snapshot
from streams.observability.scaling import scale_signals, unknown_group
from streams.observability.state import (
    SampleHistory,
    clean,
    dumps,
    pipeline_topology,
    state_dict,
)
from streams.observability.stats_reader import StatsReader, WorkerStats
from streams.pipeline import Pipeline
from streams.replay import ReplayMarks
from streams.stats import SupervisorReport

if TYPE_CHECKING:
    from collections.abc import Iterable

    from streams.lag import GroupLag, PipelineView

__all__ = ["DASHBOARD", "Monitor", "pipeline_topology"]

log = logging.getLogger("streams.monitor")

DASHBOARD = Path(__file__).parent / "dashboard"
_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
# 360 samples: 30 minutes of history at the default 5 s interval, a few hundred KB of JSON
HISTORY_SIZE = 360
_SCALE = "/api/scale/"
# missed samples tolerated before the data counts as stale (/health 503, the dashboard's banner)
STALE_INTERVALS = 3


class LagSource(Protocol):
    """What the monitor needs of ``streams.lag.LagMonitor``."""

    def sample(
        self,
        groups: Iterable[str] | None = None,
        *,
        topics: Mapping[str, Iterable[str]] | None = None,
    ) -> list[GroupLag]: ...

    def pipeline_view(
        self,
        pipeline: Pipeline,
        groups: list[GroupLag] | None = None,
        *,
        supervisors: Iterable[SupervisorReport] = (),
    ) -> PipelineView: ...

    def reconnect(self) -> None: ...

    def close(self) -> None: ...


class WorkerSource(Protocol):
    """What the monitor needs of ``StatsReader``."""

    def poll(self, timeout_s: float = 0.2) -> int: ...

    def workers(self) -> list[WorkerStats]: ...

    def supervisors(self) -> list[SupervisorReport]: ...

    def reconnect(self) -> None: ...

    def close(self) -> None: ...


def error_message(error: BaseException) -> str:
    """What went wrong, never empty: ``str(error)``, else the class name and repr.

    ``concurrent.futures.TimeoutError()`` has an empty message; shown as is it left the
    dashboard with an empty error and ``monitor sample failed:`` with nothing after it.
    """
    text = str(error).strip()
    return text or f"{type(error).__name__}: {error!r}"


class Monitor:
    """Samples lag and worker stats every ``interval_s``; serves metrics, JSON and the dashboard.

    ``start(host, port)`` takes the first sample, then starts the sampler thread and the HTTP
    server (port 0 picks a free port, see ``address``); ``close()`` stops both and closes the
    Kafka clients. Use as a context manager.
    """

    def __init__(
        self,
        pipelines: Sequence[Pipeline] = (),
        *,
        kafka: KafkaSettings | None = None,
        interval_s: float = 5.0,
        cluster_name: str = "default",
        history_size: int = HISTORY_SIZE,
        lag: LagSource | None = None,
        stats: WorkerSource | None = None,
        clock: Callable[[], float] = time.time,
        transaction_timeout_s: float = 30.0,
        records_per_replica: int = DEFAULT_RECORDS_PER_REPLICA,
    ) -> None:
        settings = kafka or KafkaSettings()
        if lag is None:
            # the replay tasks affecting a group mark it (streams.lag.marks): the ledger is
            # followed, so a sample reads only what was added to it
            lag = LagMonitor(
                settings,
                transaction_timeout_s=transaction_timeout_s,
                replay=ReplayMarks(settings),
            )
        self.pipelines = list(pipelines)
        self.interval_s = interval_s
        self.cluster_name = cluster_name
        self.records_per_replica = records_per_replica
        self._lag = lag
        self._stats = stats if stats is not None else StatsReader(settings)
        self._clock = clock
        self._history = SampleHistory(history_size)
        self._topologies = [pipeline_topology(p) for p in self.pipelines]
        # partitions of the pipelines' inputs and retry topics are listed even before a commit
        self._hints = lag_hints(*self.pipelines)
        self._snapshot: Snapshot | None = None
        self._throughput: dict[str, float | None] = {}
        self._state_cache: dict[bool, tuple[Snapshot, bytes]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None
        self._server: ThreadingHTTPServer | None = None
        self._serving: threading.Thread | None = None
        self.exporter = MetricsExporter(lambda: self._snapshot)

    # sampling

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    def clock(self) -> float:
        """The monitor's wall clock (epoch seconds): what sample times are measured on."""
        return self._clock()

    def sample_once(self) -> Snapshot:
        """Take one sample now and make it the current one (on failure keep the last one)."""
        began = time.monotonic()
        now = self._clock()
        try:
            groups = self._lag.sample(topics=self._hints)
            self._stats.poll()
            workers = self._stats.workers()
            supervisors = self._stats.supervisors()
            views = [
                self._lag.pipeline_view(p, groups, supervisors=supervisors) for p in self.pipelines
            ]
            by_group = {g.group: g for g in groups}
            # a stage whose group the cluster does not list yet: its input partitions still
            # give the autoscaler the lag and the cap (kept out of the sample's groups)
            missing = [g for g in self._hints if g not in by_group]
            if missing:
                extra = self._lag.sample(missing, topics={g: self._hints[g] for g in missing})
                by_group.update({g.group: g for g in extra if g.group not in by_group})
            scale = scale_signals(
                self.pipelines,
                by_group,
                views,
                workers,
                records_per_replica=self.records_per_replica,
            )
        except Exception as error:  # noqa: BLE001 - any failure: keep serving the last sample
            return self._failed(error)
        with self._lock:
            throughput = {}
            for view in views:
                for stage in view.stages:
                    rate = self._history.throughput(by_group.get(stage.group), now)
                    throughput[stage.group] = rate
                    self._history.add(
                        stage.group,
                        now,
                        lag=stage.input_lag,
                        lag_seconds=stage.input_lag_seconds,
                        throughput=rate,
                    )
            self._throughput = throughput
        previous_errors = self._snapshot.errors if self._snapshot else 0
        snapshot = Snapshot(
            taken_at=now,
            cluster_name=self.cluster_name,
            groups=tuple(groups),
            views=tuple(views),
            workers=tuple(workers),
            supervisors=tuple(supervisors),
            sample_seconds=time.monotonic() - began,
            errors=previous_errors,
            scale=tuple(scale.values()),
        )
        self._snapshot = snapshot
        return snapshot

    def _failed(self, error: Exception) -> Snapshot:
        """Keep the last good sample, say why this one failed, and rebuild the Kafka clients.

        New clients on every failure: after a broker restart the old admin client never
        answered a DescribeConsumerGroups again (tests/integration/test_monitor_restart.py).
        """
        message = error_message(error)
        log.warning("monitor sample failed: %s", message)
        # taken_at 0: no good sample yet, so the data is as old as it can be (never fresh)
        previous = self._snapshot or Snapshot(0.0, self.cluster_name, (), (), ())
        failed = replace(previous, errors=previous.errors + 1, error=message)
        self._snapshot = failed
        for client in (self._lag, self._stats):
            try:
                client.reconnect()
            except Exception:
                log.warning("cannot rebuild a Kafka client", exc_info=True)
        return failed

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample_once()
            # render here, not in the first scrape after the sample: about 0.75 s per 10,000
            # partitions, which would otherwise be one slow scrape per interval
            self.exporter.render()
            self.state(partitions=False)

    # views

    def state(self, *, partitions: bool = True) -> bytes:
        """``/api/state`` as JSON bytes, built once per sample."""
        snapshot = self._snapshot
        if snapshot is None:
            return dumps({"taken_at": None, "pipelines": [], "groups": [], "workers": []})
        cached = self._state_cache.get(partitions)
        if cached is not None and cached[0] is snapshot:
            return cached[1]
        with self._lock:
            history = self._history.to_dict()
            throughput = dict(self._throughput)
        built = state_dict(
            snapshot,
            topologies=self._topologies,
            interval_s=self.interval_s,
            stale_after_s=self.stale_after_s(snapshot),
            history=history,
            throughput=throughput,
            partitions=partitions,
        )
        body = dumps(clean(built))
        self._state_cache[partitions] = (snapshot, body)
        return body

    def stale_after_s(self, snapshot: Snapshot) -> float:
        """Age at which a sample's data is stale: three intervals, each the wait plus a sample."""
        return STALE_INTERVALS * (self.interval_s + snapshot.sample_seconds)

    def health(self) -> tuple[HTTPStatus, bytes]:
        """``/health``: 200 ``ok`` while fresh, else 503 and a JSON body with the reason and age."""
        snapshot = self._snapshot
        now = self._clock()
        if snapshot is not None and snapshot.taken_at > 0:
            age_s = max(0.0, now - snapshot.taken_at)
            limit_s = self.stale_after_s(snapshot)
            if age_s <= limit_s:
                return HTTPStatus.OK, b"ok\n"
            reason = (
                f"the last successful sample is {age_s:.1f} s old, older than {limit_s:.1f} s "
                f"({STALE_INTERVALS} intervals of {self.interval_s:g} s)"
            )
        else:
            age_s, limit_s = None, None
            reason = "no successful sample yet"
        body = {
            "status": "stale",
            "reason": reason,
            "age_s": None if age_s is None else round(age_s, 1),
            "stale_after_s": None if limit_s is None else round(limit_s, 1),
            "last_success_at": snapshot.taken_at if snapshot and snapshot.taken_at > 0 else None,
            "last_error": snapshot.error if snapshot else None,
            "errors": snapshot.errors if snapshot else 0,
        }
        return HTTPStatus.SERVICE_UNAVAILABLE, dumps(body)

    def scale(self, group: str) -> tuple[HTTPStatus, bytes]:
        """``/api/scale/<group>``: 200 and the signal; 404 unknown; 503 + ``error`` if stale."""
        if group not in self._hints:
            return HTTPStatus.NOT_FOUND, dumps(unknown_group(group, self.pipelines))
        snapshot = self._snapshot
        signal = next((s for s in snapshot.scale if s.group == group), None) if snapshot else None
        status, _ = self.health()
        if status is HTTPStatus.OK and signal is not None and snapshot and snapshot.error is None:
            return HTTPStatus.OK, dumps(signal.to_dict())
        if snapshot is not None and snapshot.error is not None:
            error = f"the last sample failed: {snapshot.error}"
        elif signal is None:
            error = "no successful sample yet"
        else:
            error = "the last successful sample is stale (see /health)"
        body = {**(signal.to_dict() if signal else {"group": group}), "error": error}
        body["taken_at"] = snapshot.taken_at if snapshot and snapshot.taken_at > 0 else None
        return HTTPStatus.SERVICE_UNAVAILABLE, dumps(body)

    # process

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("the monitor is not serving: call start() first")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def start(self, host: str = "127.0.0.1", port: int = 9308) -> None:
        """First sample, then the sampler thread and the HTTP server (both daemon threads)."""
        self.sample_once()
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._serving = threading.Thread(
            target=self._server.serve_forever, name="streams-monitor-http", daemon=True
        )
        self._serving.start()
        self._sampler = threading.Thread(target=self._run, name="streams-monitor-sampler")
        self._sampler.daemon = True
        self._sampler.start()

    def close(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._serving is not None:
            self._serving.join(timeout=5)
        if self._sampler is not None:
            self._sampler.join(timeout=max(30.0, self.interval_s * 2))
        self._stats.close()
        self._lag.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _handler_for(monitor: Monitor) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "streams-monitor"

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/metrics":
                self._send(monitor.exporter.render(), "text/plain; version=0.0.4; charset=utf-8")
            elif url.path == "/api/state":
                query = parse_qs(url.query)
                partitions = query.get("partitions", ["1"])[0] not in {"0", "false", "no"}
                body = monitor.state(partitions=partitions)
                # the dashboard measures the data's age on the monitor's clock, not the browser's
                served_at = {"X-Streams-Served-At": f"{monitor.clock():.3f}"}
                self._send(body, "application/json", headers=served_at)
            elif url.path.startswith(_SCALE):
                status, body = monitor.scale(unquote(url.path[len(_SCALE) :]))
                self._send(body, "application/json", status)
            elif url.path == "/health":
                status, body = monitor.health()
                kind = (
                    "text/plain; charset=utf-8" if status is HTTPStatus.OK else "application/json"
                )
                self._send(body, kind, status)
            elif url.path in _STATIC:
                name, content_type = _STATIC[url.path]
                self._send((DASHBOARD / name).read_bytes(), content_type)
            else:
                self._send(b"not found\n", "text/plain; charset=utf-8", HTTPStatus.NOT_FOUND)

        def _send(
            self,
            body: bytes,
            content_type: str,
            status: HTTPStatus = HTTPStatus.OK,
            headers: Mapping[str, str] | None = None,
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            log.debug("http: " + format, *args)  # noqa: G003 - the base class builds the format

    return Handler
