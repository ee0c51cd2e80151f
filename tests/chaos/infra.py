"""The infrastructure run: the chaos pipeline while its infrastructure fails, not just its workers.

On a stack of its own (broker and schema registry), with ``mid1`` in Avro so that the stages
need the registry, while records flow:

1. one record larger than any DLQ takes is fed (it fails stage a, whose DLQ write is too big:
   it must come out of the DLQ as ``unroutable``, cut to fit, and stall nothing);
2. the schema registry is cut for ``registry_outage_s`` (a TCP proxy in front of it goes down),
   and meanwhile workers of stages a and b are SIGKILLed: restarted, they must wait for the
   registry (not exit 5) and go on once it is back;
3. the broker is restarted (clean), and workers are SIGKILLed again.

At the end every invariant of the checker holds, the oversized record is in stage a's DLQ as
``unroutable``, every worker is alive, and the monitor's ``/health`` answered 503 while the
broker was away and 200 again after.

    python -m tests.chaos.infra --records 8000 --rate 200 --json artifacts/chaos-infra.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from confluent_kafka import Producer

from streams.localstack.process import free_port
from tests.chaos.harness import Chaos, ChaosConfig, ChaosReport, Fault, private_stack, write_result
from tests.chaos.pipeline import SCHEMAS, topics
from tests.faults import TcpProxy

__all__ = ["InfraChaos", "InfraReport"]

OVERSIZED_BYTES = 2_000_000  # twice what a DLQ with the broker's default limit takes


@dataclass
class InfraReport:
    chaos: ChaosReport
    health: list[tuple[float, int | None]] = field(default_factory=list)  # (at_s, status)
    alive_at_end: dict[str, bool] = field(default_factory=dict)
    oversized_in_dlq: list[dict[str, Any]] = field(default_factory=list)
    # exit codes of the monitor process when it died (restarted at once, as a supervisor would)
    monitor_exits: list[int] = field(default_factory=list)

    @property
    def health_went_503(self) -> bool:
        return 503 in {status for _, status in self.health}

    @property
    def health_200_after(self) -> bool:
        return bool(self.health) and self.health[-1][1] == 200

    def failures(self) -> list[str]:
        """What the run promised and did not hold (empty: it passed)."""
        found = [f"invariant: {v}" for v in self.chaos.violations]
        if [r["reason"] for r in self.oversized_in_dlq] != ["unroutable"]:
            found.append(f"the oversized record in the DLQ: {self.oversized_in_dlq}")
        if not self.health_went_503:
            found.append("the monitor's /health never answered 503 while the broker was away")
        if not self.health_200_after:
            found.append("the monitor's /health did not answer 200 again at the end")
        dead = sorted(c for c, alive in self.alive_at_end.items() if not alive)
        if dead or not self.alive_at_end:
            found.append(f"workers not alive at the end: {dead}")
        return found

    def summary(self) -> dict[str, Any]:
        return {
            **self.chaos.summary(),
            "failures": self.failures(),
            "scenario": "infrastructure",
            "health_503_seen": self.health_went_503,
            "health_at_end": self.health[-1][1] if self.health else None,
            "workers_alive_at_end": self.alive_at_end,
            "oversized_in_dlq": self.oversized_in_dlq,
            "monitor_exits": self.monitor_exits,
        }


class InfraChaos(Chaos):
    """The chaos run with a registry proxy, an oversized record, and a monitor watching."""

    def __init__(
        self, config: ChaosConfig, *, workdir: Path, registry_outage_s: float = 60.0
    ) -> None:
        stack = private_stack(workdir)
        stack.up()  # broker and registry
        status = stack.status()
        super().__init__(config, bootstrap=status.bootstrap_servers, workdir=workdir, stack=stack)
        registry = urlsplit(status.schema_registry_url)
        self.proxy = TcpProxy(registry.hostname or "127.0.0.1", registry.port or 80)
        self.proxy.up()
        self.registry_url = f"http://127.0.0.1:{self.proxy.port}{registry.path}"
        self.registry_outage_s = registry_outage_s
        self.expected_foreign = 1  # the oversized record
        self.health: list[tuple[float, int | None]] = []

    def _env(self, component: str) -> dict[str, str]:
        return {
            **super()._env(component),
            "CHAOS_AVRO": "1",
            "STREAMS_SCHEMAS_DIR": str(SCHEMAS),
            "STREAMS_SCHEMA_REGISTRY_URL": self.registry_url,
        }

    # -- the faults ------------------------------------------------------------------------

    def _feed_oversized(self) -> None:
        producer = Producer({**self.client, "message.max.bytes": 3 * OVERSIZED_BYTES})
        producer.produce(topics(self.name)[0], b"x" * OVERSIZED_BYTES, key=b"oversized")
        assert producer.flush(60) == 0
        self.faults.append(Fault("oversized", "a", round(time.monotonic() - self.began, 1)))

    def _registry_outage(self) -> None:
        at = time.monotonic()
        self.proxy.down()
        self.faults.append(Fault("registry-down", "registry", round(at - self.began, 1)))
        outage = self.faults[-1]
        # workers that restart now must wait for the registry, and not give up (exit 5); they
        # recover only once it is back, which is when their recovery is timed from
        before = {component: self._progress(component) for component in ("b", "a")}
        killed = [self._hit_worker("sigkill", c, wait=False) for c in ("b", "a")]
        while time.monotonic() - at < self.registry_outage_s:
            self._revive()
            time.sleep(0.5)
        self.proxy.up()
        back = time.monotonic()
        outage.recovered_after_s = round(back - at, 1)
        for fault in killed:
            recovered = self._recovered(fault.target, back, before[fault.target])
            fault.recovered_after_s = None if recovered is None else round(recovered, 1)

    def _start_monitor(self, port: int, log: Any) -> subprocess.Popen[bytes]:
        """`streams monitor` as its own process, as operators run it.

        Not in this process: a describe_consumer_groups request that spans a broker restart can
        abort the client's process (librdkafka#4605, an assertion in
        rd_kafka_enq_once_del_source_return), and a test process that aborts takes the test run
        with it. A monitor that dies is counted (``monitor_exits``) and started again.
        """
        command = [
            sys.executable, "-m", "streams.cli.main", "monitor",
            "--pipeline", "tests.chaos.pipeline:pipeline",
            "--host", "127.0.0.1", "--port", str(port), "--interval", "2",
        ]  # fmt: skip
        return subprocess.Popen(
            command, env=self._env("monitor"), stdout=log, stderr=subprocess.STDOUT
        )

    def _watch_health(self, stop: threading.Event) -> None:
        port = free_port()
        with (self.workdir / "monitor.log").open("ab") as log:
            monitor = self._start_monitor(port, log)
            try:
                while not stop.is_set():
                    code = monitor.poll()
                    if code is not None:
                        self.monitor_exits.append(code)
                        monitor = self._start_monitor(port, log)
                    self.health.append((round(time.monotonic() - self.began, 1), _health(port)))
                    stop.wait(1.0)
            finally:
                monitor.terminate()
                try:
                    monitor.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    monitor.kill()

    def run_infra(self) -> InfraReport:
        self.monitor_exits: list[int] = []
        stop = threading.Event()
        watcher = threading.Thread(target=self._watch_health, args=(stop,), daemon=True)
        watcher.start()
        try:
            report = self.run()
            oversized = self._oversized_in_dlq()  # read while the broker still runs
            # a last few samples after the run: the monitor must be healthy again
            time.sleep(8)
        finally:
            stop.set()
            watcher.join(timeout=20)
            self.proxy.down()
            assert self.stack is not None
            self.stack.down()
        return InfraReport(
            chaos=report,
            health=self.health,
            alive_at_end=self.alive_at_end,
            oversized_in_dlq=oversized,
            monitor_exits=self.monitor_exits,
        )

    def _faults(self) -> None:
        """Between the start and the drain: the faults of the docstring, in order."""
        self._wait_progress("a", time.monotonic() + 120)
        self._feed_oversized()
        self._wait_progress("b", time.monotonic() + 120)
        self._registry_outage()
        self._wait_progress("b", time.monotonic() + 180)
        time.sleep(3)
        # away for 15 s: the monitor (2 s interval) says stale after three intervals plus the
        # sample time without a successful sample; a broker back within 4 s (as a clean
        # restart can be) would not make /health answer 503, and the check below would fail
        self._restart_broker("broker-clean", away_s=15.0)
        for component in ("c", "b", "store"):
            if not self._wait_progress(component, time.monotonic() + 120):
                break
            self._wait_open_transaction(component)
            self._hit_worker("sigkill", component)

    def _oversized_in_dlq(self) -> list[dict[str, Any]]:
        from streams import headers  # noqa: PLC0415
        from streams.kafka.messages import message_headers  # noqa: PLC0415

        found = []
        for message in self._read(self.pipeline.get("a").dlq_topic):
            if message.key() == b"oversized":
                got = message_headers(message)
                found.append(
                    {
                        "reason": (headers.get(got, headers.ERROR_REASON) or b"").decode(),
                        "truncated": (headers.get(got, headers.TRUNCATED) or b"").decode(),
                        "kept_bytes": len(message.value() or b""),
                    }
                )
        return found


def _health(port: int) -> int | None:
    """The monitor's /health status, or None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, TimeoutError, ConnectionError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=8000)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--registry-outage-s", type=float, default=60.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="chaos-infra-"))
    config = ChaosConfig(records=args.records, rate=args.rate, kills=0, sigterms=0)
    report = InfraChaos(
        config, workdir=workdir, registry_outage_s=args.registry_outage_s
    ).run_infra()
    summary = report.summary()
    text = json.dumps(summary, indent=2)
    print(text)  # noqa: T201
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    write_result("chaos-infra", summary)
    return 0 if not report.failures() else 1


if __name__ == "__main__":
    sys.exit(main())
