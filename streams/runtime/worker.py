"""One worker process: runs one slot of one stage until SIGTERM.

Exit codes (the supervisor restarts only on 1 and on signals):
0 stopped on request; 1 crashed (restart); 3 stopped on a record it cannot process (needs an
operator: see the error line); 4 fenced by another worker with the same slot; 5 cannot start
(configuration, schema mismatch, unknown stage).
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

from streams.config import KafkaSettings, LogSettings
from streams.exceptions import FencedError, KafkaClientError, StageStoppedError, StreamsError
from streams.pipeline import load_pipeline
from streams.runtime.logs import configure_logging
from streams.runtime.publish import StatsPublisher
from streams.sinks import SinkRunner
from streams.stage import StageRunner

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


class _AbortNow(BaseException):
    """Second SIGTERM, or the shutdown deadline: stop without committing."""


def run_worker(reference: str, stage: str, slot: int) -> int:
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
    try:
        spec = load_pipeline(reference).component(stage)
        publisher = StatsPublisher(kafka)
        runner: StageRunner | SinkRunner
        if spec.kind == "stage":
            runner = StageRunner(spec, slot=slot, kafka=kafka, on_stats=publisher.publish)
        else:
            runner = SinkRunner(spec, slot=slot, kafka=kafka, on_stats=publisher.publish)
    except StreamsError as error:
        log.error("cannot start: %s", error, extra={"hint": error.hint})  # noqa: TRY400
        return EXIT_START_FAILED

    deadline_s = runner.settings.shutdown_deadline_s
    stopping = {"since": 0.0}

    def on_term(signum: int, _frame: FrameType | None) -> None:
        if stopping["since"]:
            raise _AbortNow
        stopping["since"] = time.monotonic()
        log.info("%s: draining the batch in flight, then committing", signal.Signals(signum).name)
        runner.request_stop()
        signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(_AbortNow()))
        signal.alarm(max(1, int(deadline_s)))

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    _start_watchdog(runner, runner.settings.watchdog_s)
    try:
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
    log.info("stopped cleanly")
    return EXIT_OK


def _start_watchdog(runner: StageRunner | SinkRunner, limit_s: float) -> None:
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
    if isinstance(error, KafkaClientError):
        return EXIT_CRASHED  # the broker may come back: restarted with backoff
    return EXIT_START_FAILED  # missing topics, bad settings: an operator must act


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m streams.runtime.worker")
    parser.add_argument("pipeline", help="MODULE:PIPELINE")
    parser.add_argument("--stage", required=True)
    parser.add_argument("--slot", type=int, default=0)
    parser.add_argument("--log-format", choices=["text", "json"], default="text")
    parser.add_argument("--log-level", default=LogSettings().log_level)
    args = parser.parse_args(argv)
    configure_logging(args.log_format, args.log_level, prefix=f"{args.stage}/{args.slot}")
    # `kill -USR1 <pid>` prints every thread's stack to the log: for a worker that seems stuck
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    sys.exit(run_worker(args.pipeline, args.stage, args.slot))


if __name__ == "__main__":
    main()
