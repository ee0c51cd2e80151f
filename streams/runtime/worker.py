"""One worker process: runs one slot of one stage until SIGTERM.

Exit codes (the supervisor restarts only on 1 and on signals):
0 stopped on request; 1 crashed, or Kafka unreachable (restart); 3 stopped on a record it cannot
process (needs an operator: see the error line); 4 fenced by another worker with the same slot,
or refused to start because a live worker runs it (``streams.stage.twins``);
5 cannot start (configuration: missing topics, bad settings, a model that does not match its
schema, unknown stage). An unreachable schema registry is never exit 5: the worker waits for
it, saying so, and starts once it answers.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING

from streams.config import KafkaSettings, LogSettings, StageSettings
from streams.exceptions import (
    FencedError,
    KafkaClientError,
    RegistryUnavailableError,
    StageStoppedError,
    StreamsError,
)
from streams.pipeline import load_pipeline
from streams.runtime.health import HealthServer
from streams.runtime.logs import configure_logging
from streams.runtime.publish import StatsPublisher
from streams.stage import StageRunner

if TYPE_CHECKING:
    from typing import TypeAlias

    from streams.agents import FaustRunner
    from streams.aggregate import AggregateRunner
    from streams.sinks import SinkRunner

    # What a worker runs, by the kind of its component (spec.kind). A worker imports only its
    # own kind's runner: aggregates (SQLite, RocksDB), sinks (the database layer) and faust
    # agents are not loaded by a plain stage (bench/imports.py measures what imports cost).
    Runner: TypeAlias = StageRunner | SinkRunner | AggregateRunner | FaustRunner

__all__ = [
    "EXIT_CRASHED",
    "EXIT_FENCED",
    "EXIT_OK",
    "EXIT_START_FAILED",
    "EXIT_STOPPED_ON_RECORD",
    "main",
]

EXIT_OK = 0
EXIT_CRASHED = 1
EXIT_STOPPED_ON_RECORD = 3
EXIT_FENCED = 4
EXIT_START_FAILED = 5

log = logging.getLogger("streams.worker")

# How long a worker waits for an unreachable schema registry before it asks again: doubling
# from 1 s to 10 s (a registry that comes back is used within 10 s).
_REGISTRY_WAIT_START_S = 1.0
_REGISTRY_WAIT_MAX_S = 10.0


class _AbortNow(BaseException):
    """Second SIGTERM, or the shutdown deadline: stop without committing."""


class _Stop:
    """SIGTERM/SIGINT for the whole life of the worker: waiting to start, then running.

    The first signal asks the runner to drain and commit (within the shutdown deadline); a
    second one, or the deadline, aborts.
    """

    def __init__(self) -> None:
        self.since = 0.0
        self.runner: Runner | None = None
        self.deadline_s = 30.0

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        if self.since:
            raise _AbortNow
        self.since = time.monotonic()
        if self.runner is None:
            log.info("%s while starting: stopping", signal.Signals(signum).name)
            return
        log.info("%s: draining the batch in flight, then committing", signal.Signals(signum).name)
        self.runner.request_stop()
        signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(_AbortNow()))
        signal.alarm(max(1, int(self.deadline_s)))


def run_worker(
    reference: str,
    stage: str,
    slot: int,
    *,
    health_port: int | None = None,
    health_host: str = "127.0.0.1",
    take_over: bool = False,
) -> int:
    kafka = KafkaSettings()
    # the first line says which cluster this worker dials, and why: a worker meant for a real
    # cluster that was not given STREAMS_BOOTSTRAP_SERVERS would otherwise dial the local
    # stack's port in silence
    log.info(
        "worker %s/%s of %s: Kafka at %s (%s)",
        stage,
        slot,
        reference,
        kafka.bootstrap_servers,
        kafka.bootstrap_source,
    )
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    health = _health(health_host, health_port)
    publisher = StatsPublisher(kafka, reference=reference)
    try:
        try:
            runner = _build_runner(
                reference,
                stage=stage,
                slot=slot,
                kafka=kafka,
                publisher=publisher,
                stop=stop,
                take_over=take_over,
            )
        except StreamsError as error:
            log.error("cannot start: %s", error, extra={"hint": error.hint})  # noqa: TRY400
            return EXIT_START_FAILED
        if runner is None:
            return EXIT_OK  # stopped while waiting to start
        stop.runner, stop.deadline_s = runner, runner.settings.shutdown_deadline_s
        if health is not None:
            health.worker = runner
        _start_watchdog(runner, runner.settings.watchdog_s)
        runner.run()
    except StreamsError as error:
        log.error("%s", error, extra={"hint": error.hint})  # noqa: TRY400
        return _exit_code(error)
    except _AbortNow:
        log.warning("stop deadline passed or second signal: aborting the open transaction")
        return EXIT_CRASHED
    finally:
        signal.alarm(0)
        publisher.close()
        if health is not None:
            health.close()
    log.info("stopped cleanly")
    return EXIT_OK


def _health(host: str, port: int | None) -> HealthServer | None:
    """The probes' server, listening before the worker starts (None without a port)."""
    if port is None:
        return None
    try:
        server = HealthServer(host, port, watchdog_s=StageSettings().watchdog_s)
    except OSError as error:
        # a probe port taken by another process: the worker runs without probes and says so
        log.error(  # noqa: TRY400 - the reason is the news, not a traceback
            "cannot serve health probes on %s:%s: %s",
            host,
            port,
            error,
            extra={"hint": "pick a free --health-port for this worker"},
        )
        return None
    log.info("health probes on http://%s:%s/livez and /readyz", host, server.port)
    return server


def _build_runner(
    reference: str,
    *,
    stage: str,
    slot: int,
    kafka: KafkaSettings,
    publisher: StatsPublisher,
    stop: _Stop,
    take_over: bool = False,
) -> Runner | None:
    """The worker's runner; waits (with backoff, saying so) while the registry is down.

    An unreachable schema registry is a transient fault, not a configuration error: the
    worker does not exit (exit 5 is never restarted), it tries again until the registry
    answers or it is asked to stop (then None).
    """
    spec = load_pipeline(reference).component(stage)
    wait_s = _REGISTRY_WAIT_START_S
    while True:
        try:
            if spec.kind == "stage":
                return StageRunner(
                    spec,
                    slot=slot,
                    kafka=kafka,
                    on_stats=publisher.publish,
                    reference=reference,
                    take_over=take_over,
                )
            if spec.kind == "aggregate":
                from streams.aggregate import AggregateRunner  # noqa: PLC0415 - by kind, above

                return AggregateRunner(
                    spec,
                    slot=slot,
                    kafka=kafka,
                    on_stats=publisher.publish,
                    reference=reference,
                    take_over=take_over,
                )
            if spec.kind == "faust":
                from streams.agents import FaustRunner  # noqa: PLC0415 - by kind, above

                return FaustRunner(spec, slot=slot, kafka=kafka, on_stats=publisher.publish)
            from streams.sinks import SinkRunner  # noqa: PLC0415 - by kind, above

            return SinkRunner(spec, slot=slot, kafka=kafka, on_stats=publisher.publish)
        except RegistryUnavailableError as error:
            log.warning(
                "waiting for the schema registry at %s: %s; trying again in %.0f s",
                kafka.schema_registry_url,
                error,
                wait_s,
                extra={"hint": error.hint},
            )
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if stop.since:
                return None
            time.sleep(0.2)
        wait_s = min(wait_s * 2, _REGISTRY_WAIT_MAX_S)


def _start_watchdog(runner: Runner, limit_s: float) -> None:
    """End the process (exit 1, so the supervisor restarts it) if the loop stops turning.

    A client call that never returns (seen once: send_offsets_to_transaction hanging after a
    broker restart) would otherwise hold the partitions forever. Exactly-once is safe: the
    restarted worker's init_transactions() aborts whatever the stuck one had open.
    """

    def watch() -> None:
        while True:
            time.sleep(min(10.0, limit_s / 4))
            stuck = time.monotonic() - runner.heartbeat
            if stuck > limit_s:
                log.error(
                    "the worker loop has not turned for %.0f s; exiting so that it is restarted",
                    stuck,
                    extra={"hint": "the stacks below show where it hung"},
                )
                faulthandler.dump_traceback(all_threads=True)
                os._exit(EXIT_CRASHED)

    threading.Thread(target=watch, name="watchdog", daemon=True).start()


def _exit_code(error: StreamsError) -> int:
    if isinstance(error, FencedError):
        return EXIT_FENCED
    if isinstance(error, StageStoppedError):
        return EXIT_STOPPED_ON_RECORD
    if isinstance(error, KafkaClientError | RegistryUnavailableError):
        return EXIT_CRASHED  # the broker or registry may come back: restarted with backoff
    return EXIT_START_FAILED  # missing topics, bad settings: an operator must act


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m streams.runtime.worker")
    parser.add_argument("pipeline", help="MODULE:PIPELINE")
    parser.add_argument("--stage", required=True)
    parser.add_argument("--slot", type=int, default=0)
    parser.add_argument("--log-format", choices=["text", "json"], default="text")
    parser.add_argument("--log-level", default=LogSettings().log_level)
    parser.add_argument("--health-port", type=int, help="serve /livez and /readyz on this port")
    parser.add_argument("--health-host", default="127.0.0.1")
    parser.add_argument(
        "--take-over", action="store_true", help="start even if a live worker runs this slot"
    )
    args = parser.parse_args(argv)
    configure_logging(args.log_format, args.log_level, prefix=f"{args.stage}/{args.slot}")
    # `kill -USR1 <pid>` prints every thread's stack to the log: for a worker that seems stuck
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    sys.exit(
        run_worker(
            args.pipeline,
            args.stage,
            args.slot,
            health_port=args.health_port,
            health_host=args.health_host,
            take_over=args.take_over,
        )
    )


if __name__ == "__main__":
    main()
