"""One contender run: start the process, watch it, stop it, verify the output, measure.

The measured window runs from the first input record the contender consumed (it writes the
time to its marker file) to the moment the last output record was committed: the first time
the output's summed last stable offset reached its final value (``LsoWatcher``), or the moment
the read_committed verifier read the last record if that came first.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.broker import Broker
from bench.child import EXIT_NOT_AVAILABLE
from bench.contenders import Contender
from bench.measure import Sample, host_cpu_ticks, interpolate, sample_process
from bench.spec import RunSpec, Workload, read_marker
from bench.verify import LsoWatcher, OutputVerifier

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_INTERVAL_S = 0.02
# A contender that stops by itself gets this long after the verifier saw every record.
SELF_STOP_GRACE_S = 10.0
# After SIGTERM a contender gets this long to shut down before SIGKILL.
KILL_GRACE_S = 30.0
# After a contender exits, the verifier gets this long to see its last commit.
LATE_COMMIT_GRACE_S = 10.0
MIB = 1024.0


@dataclass(frozen=True, slots=True)
class WorkloadInput:
    """An input topic filled once, read by every contender of every round."""

    name: Workload
    topic: str
    records: int
    values: frozenset[bytes]
    schema_id: int | None
    mean_value_bytes: float


@dataclass(frozen=True, slots=True)
class RunSettings:
    """What is the same for every contender in a harness run."""

    run_id: str
    bootstrap_servers: str
    schema_registry_url: str
    partitions: int
    consume_batch: int
    txn_max_records: int
    txn_interval_s: float
    linger_ms: int
    retry_backoff_ms: int | None
    fetch_queue_backoff_ms: int | None
    # --consumer-setting / --producer-setting: raw librdkafka settings for every librdkafka
    # contender (b1, b2, ours, quix), on top of its own
    consumer_settings: dict[str, str]
    producer_settings: dict[str, str]
    timeout_s: float
    work_dir: Path
    interpreters: dict[str, str]
    records_override: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class RunResult:
    """Everything measured in one contender run (written to the JSON results as is)."""

    contender: str
    workload: str
    round: int
    records: int
    status: str  # ok | not available | failed | timeout
    problem: str | None = None
    seconds: float | None = None
    records_per_s: float | None = None
    cpu_window_s: float | None = None
    cpu_us_per_record: float | None = None
    cpu_total_s: float | None = None
    cpu_total_us_per_record: float | None = None
    peak_rss_mib: float | None = None
    end_rss_mib: float | None = None
    startup_s: float | None = None
    host_busy_cores: float | None = None
    exit_code: int | None = None
    stopped_by: str | None = None
    output_seen: int | None = None
    output_distinct: int | None = None
    # Transaction markers (and aborted records) in the output topic: 0 means no transactions.
    output_marker_offsets: int | None = None
    log: str | None = None
    window_end: str | None = None
    # How much later the verifier had read the last record than the LSO said it was committed.
    verifier_lag_s: float | None = None
    report: dict[str, Any] = field(default_factory=dict)


class _Watch:
    """Samples a child process and the host until the child has been reaped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[Sample] = []
        self.host: list[tuple[float, int, int]] = []

    def tick(self) -> None:
        now = time.monotonic()
        sample = sample_process(self.pid, now)
        if sample is not None:
            self.samples.append(sample)
        busy, total = host_cpu_ticks()
        self.host.append((now, busy, total))

    def cpu_between(self, start: float, end: float) -> float:
        times = [s.t for s in self.samples]
        cpu = [s.cpu_s for s in self.samples]
        return interpolate(times, cpu, end) - interpolate(times, cpu, start)

    def host_busy_cores(self, start: float, end: float) -> float | None:
        times = [h[0] for h in self.host]
        busy = [float(h[1]) for h in self.host]
        total = [float(h[2]) for h in self.host]
        d_total = interpolate(times, total, end) - interpolate(times, total, start)
        if d_total <= 0:
            return None
        d_busy = interpolate(times, busy, end) - interpolate(times, busy, start)
        return (os.cpu_count() or 1) * d_busy / d_total

    def rss_at(self, t: float) -> float:
        before = [s for s in self.samples if s.t <= t]
        return (before[-1] if before else self.samples[0]).rss_kib / MIB

    def peak_rss(self) -> float:
        return max(max(s.rss_kib, s.hwm_kib) for s in self.samples) / MIB


@dataclass(slots=True)
class _Supervisor:
    """Samples the child until it exits, and stops it when it is done or late."""

    proc: subprocess.Popen[bytes]
    contender: Contender
    verifier: OutputVerifier
    watch: _Watch
    timeout_s: float
    result: RunResult

    def wait(self) -> tuple[int, Any]:
        """Return (wait status, rusage) of the reaped child."""
        started = time.monotonic()
        term_sent_at: float | None = None
        killed = False
        while True:
            pid, wait_status, rusage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                return wait_status, rusage
            self.watch.tick()
            now = time.monotonic()
            if term_sent_at is None:
                if self._done(now):
                    term_sent_at = self._terminate(
                        now, "SIGTERM after the verifier saw every record"
                    )
                elif now - started > self.timeout_s:
                    term_sent_at = self._terminate(now, "SIGTERM at the timeout")
                    self.result.status = "timeout"
                    self.result.problem = f"no result within {self.timeout_s:.0f} s"
            elif not killed and now - term_sent_at > KILL_GRACE_S:
                self.proc.kill()
                killed = True
                self.result.stopped_by = (
                    f"SIGKILL (still running {KILL_GRACE_S:.0f} s after SIGTERM)"
                )
            time.sleep(SAMPLE_INTERVAL_S)

    def _done(self, now: float) -> bool:
        reached_at = self.verifier.reached_at
        if reached_at is None:
            return False
        return not self.contender.stops_itself or now - reached_at > SELF_STOP_GRACE_S

    def _terminate(self, now: float, why: str) -> float:
        self.proc.send_signal(signal.SIGTERM)
        self.result.stopped_by = why
        return now


def _tag(settings: RunSettings, workload: str, contender: str, round_no: int) -> str:
    return f"{settings.run_id}-{workload}-{contender}-r{round_no}"


def build_spec(
    settings: RunSettings, contender: Contender, workload: WorkloadInput, round_no: int
) -> RunSpec:
    tag = _tag(settings, workload.name, contender.name, round_no)
    records = min(workload.records, settings.records_override.get(contender.name, workload.records))
    txn_records = contender.txn_max_records
    txn_interval = contender.txn_interval_s
    return RunSpec(
        contender=contender.name,
        workload=workload.name,
        bootstrap_servers=settings.bootstrap_servers,
        input_topic=workload.topic,
        output_topic=f"bench-{tag}-out",
        partitions=settings.partitions,
        records=records,
        group_id=f"bench-{tag}",
        transactional_id=f"bench-{tag}-txn",
        consume_batch=settings.consume_batch,
        txn_max_records=settings.txn_max_records if txn_records is None else txn_records,
        txn_interval_s=settings.txn_interval_s if txn_interval is None else txn_interval,
        linger_ms=settings.linger_ms,
        retry_backoff_ms=settings.retry_backoff_ms,
        fetch_queue_backoff_ms=settings.fetch_queue_backoff_ms,
        consumer_settings=dict(settings.consumer_settings),
        producer_settings=dict(settings.producer_settings),
        schema_registry_url=settings.schema_registry_url,
        schema_id=workload.schema_id,
        marker_path=str(settings.work_dir / f"{tag}.first"),
        report_path=str(settings.work_dir / f"{tag}.report.json"),
        work_dir=str(settings.work_dir),
    )


def run_contender(
    settings: RunSettings,
    broker: Broker,
    contender: Contender,
    workload: WorkloadInput,
    round_no: int,
) -> RunResult:
    """Run one contender once against one workload, measure it, and delete what it created."""
    spec = build_spec(settings, contender, workload, round_no)
    tag = _tag(settings, workload.name, contender.name, round_no)
    broker.create_topics([spec.output_topic], settings.partitions)
    try:
        result = _execute(settings, contender, workload, spec=spec, tag=tag, round_no=round_no)
    finally:
        problems = cleanup_run(broker, tag)
    if problems:
        result.report["cleanup_problems"] = problems
    return result


def _execute(
    settings: RunSettings,
    contender: Contender,
    workload: WorkloadInput,
    *,
    spec: RunSpec,
    tag: str,
    round_no: int,
) -> RunResult:
    result = RunResult(contender.name, workload.name, round_no, spec.records, status="failed")
    spec_path = settings.work_dir / f"{tag}.spec.json"
    spec_path.write_text(spec.to_json())
    log_path = settings.work_dir / f"{tag}.log"
    result.log = str(log_path)
    verifier = OutputVerifier(
        settings.bootstrap_servers,
        spec.output_topic,
        settings.partitions,
        spec.records,
        group_id=f"{spec.group_id}-verify",
    )
    verifier.start()
    lso = LsoWatcher(settings.bootstrap_servers, spec.output_topic, settings.partitions)
    lso.start()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [settings.interpreters[contender.interpreter], "-m", "bench.child", str(spec_path)],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    started = time.monotonic()
    watch = _Watch(proc.pid)
    supervisor = _Supervisor(proc, contender, verifier, watch, settings.timeout_s, result)
    try:
        wait_status, rusage = supervisor.wait()
    except BaseException:
        proc.kill()
        os.waitpid(proc.pid, 0)
        proc.returncode = -signal.SIGKILL
        verifier.stop()
        lso.stop()
        raise
    proc.returncode = result.exit_code = os.waitstatus_to_exitcode(wait_status)
    result.stopped_by = result.stopped_by or "itself"
    verifier.reached.wait(LATE_COMMIT_GRACE_S if proc.returncode == 0 else 0.5)
    verifier.stop()
    lso.stop()

    report_path = Path(spec.report_path)
    if report_path.exists():
        result.report.update(json.loads(report_path.read_text()))
    result.cpu_total_s = rusage.ru_utime + rusage.ru_stime
    result.cpu_total_us_per_record = 1e6 * result.cpu_total_s / spec.records
    if watch.samples:
        result.peak_rss_mib = watch.peak_rss()
    if proc.returncode == EXIT_NOT_AVAILABLE:
        result.status = "not available"
        result.problem = str(result.report.get("not_available", "NotImplementedError"))
    else:
        _judge(spec, workload, verifier, lso=lso, watch=watch, started=started, result=result)
    return result


def _judge(
    spec: RunSpec,
    workload: WorkloadInput,
    verifier: OutputVerifier,
    *,
    lso: LsoWatcher,
    watch: _Watch,
    started: float,
    result: RunResult,
) -> None:
    """Verify the output and, if it is right, compute the window's figures."""
    first = read_marker(Path(spec.marker_path))
    verdict = verifier.verdict(workload.values, whole_input=spec.records == workload.records)
    result.output_seen = verdict.seen
    result.output_distinct = verdict.distinct
    result.output_marker_offsets = verifier.offsets_without_records
    if first is not None:
        result.startup_s = first - started
    end = verifier.reached_at
    committed_at = (
        None
        if verifier.final_end_offsets is None
        else lso.first_reaching(verifier.final_end_offsets)
    )
    if end is not None:
        result.verifier_lag_s = end - committed_at if committed_at is not None else None
        # A writer that added records after the N-th (it should not) moves the final LSO later;
        # then the verifier's own count is the better end.
        if committed_at is not None and committed_at < end:
            end = committed_at
            result.window_end = "last LSO move (last output committed)"
        else:
            result.window_end = "verifier saw the last record"
    if result.status == "timeout":
        return
    if first is None:
        result.problem = "the contender never marked its first record"
    elif end is None or not verdict.ok:
        result.problem = verdict.problem or "the verifier never saw every record"
    elif result.stopped_by == "itself" and result.exit_code != 0:
        result.problem = f"exit code {result.exit_code}"
    else:
        result.status = "ok"
        result.seconds = end - first
        result.records_per_s = spec.records / result.seconds
        result.cpu_window_s = watch.cpu_between(first, end)
        result.cpu_us_per_record = 1e6 * result.cpu_window_s / spec.records
        result.end_rss_mib = watch.rss_at(end)
        result.host_busy_cores = watch.host_busy_cores(first, end)


def cleanup_run(broker: Broker, tag: str) -> list[str]:
    """Delete the output topic, internal topics and groups of one run (all carry its tag)."""
    problems = broker.delete_topics(broker.topics_containing(tag))
    problems += broker.delete_groups(broker.groups_containing(tag))
    return problems
