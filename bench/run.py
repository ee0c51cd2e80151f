"""The benchmark harness: ``python -m bench.run --records 200000 --rounds 3``.

Fills one input topic per workload, then runs every contender once per round (in a rotated
order, so no contender always runs first or last), each in its own process with a fresh group
and a fresh output topic, verifies the output with a read_committed consumer, prints one
table per workload and writes everything to ``bench/results/<timestamp>.json``. Every topic,
group and schema subject it creates carries the run id and is deleted at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, cast

from confluent_kafka.schema_registry.error import SchemaRegistryError

from bench import broker as kafka
from bench.contenders import CONTENDERS, Contender
from bench.execute import REPO_ROOT, RunResult, RunSettings, WorkloadInput, run_contender
from bench.report import (
    eos_ratios,
    format_eos_ratios,
    format_startup_phases,
    format_table,
    startup_phases,
    summarize,
)
from bench.spec import Workload
from bench.workloads import ORDER_SCHEMA_STR, build_avro, build_raw

DEFAULT_BOOTSTRAP = "127.0.0.1:19092"
DEFAULT_REGISTRY = "http://127.0.0.1:18081/apis/ccompat/v7"
PEERS_PYTHON = REPO_ROOT / ".bench-venv" / "bin" / "python"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
WARMUP_CONTENDER = "b1"
GROUP_CLEANUP_S = 75.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--records", type=int, default=200_000, help="input records per workload")
    p.add_argument("--workload", default="raw,avro", help="comma list of raw, avro")
    p.add_argument(
        "--contenders",
        default="b1,b2,ours,quix,faust,faust-eos",
        help=f"comma list of {', '.join(CONTENDERS)}; b1-1s and b2-1s join b1 and b2",
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--keys", type=int, default=128, help="size of the key set")
    p.add_argument("--consume-batch", type=int, default=500)
    p.add_argument(
        "--txn-records", type=int, default=1000, help="records per transaction (0 = no bound)"
    )
    p.add_argument("--txn-interval", type=float, default=1.0, help="seconds per transaction")
    p.add_argument("--linger-ms", type=int, default=5, help="producer linger for every contender")
    p.add_argument(
        "--retry-backoff-ms",
        type=int,
        default=None,
        help="retry.backoff.ms of the librdkafka clients (default: librdkafka's, 100 ms)",
    )
    p.add_argument(
        "--fetch-queue-backoff-ms",
        type=int,
        default=None,
        help="fetch.queue.backoff.ms of the librdkafka consumers (default: librdkafka's, 1000 ms)",
    )
    p.add_argument(
        "--consumer-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a librdkafka setting for the consumers of b1, b2, ours and quix (repeatable)",
    )
    p.add_argument(
        "--producer-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a librdkafka setting for the producers of b1, b2, ours and quix (repeatable)",
    )
    p.add_argument(
        "--records-for",
        action="append",
        default=[],
        metavar="CONTENDER=N",
        help="read only N records for a slow contender (repeatable)",
    )
    p.add_argument("--no-eos-ratio", action="store_true", help="do not add b1-1s, b2-1s")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed b1 warm-up run")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per contender run")
    p.add_argument("--seed", type=int, default=20261127)
    p.add_argument("--bootstrap", default=DEFAULT_BOOTSTRAP)
    p.add_argument("--schema-registry", default=DEFAULT_REGISTRY)
    p.add_argument("--peers-python", default=str(PEERS_PYTHON))
    p.add_argument("--results-dir", default=str(RESULTS_DIR))
    return p.parse_args(argv)


def resolve_contenders(args: argparse.Namespace) -> list[Contender]:
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        raise SystemExit(f"unknown contender(s) {unknown}; known: {list(CONTENDERS)}")
    if not args.no_eos_ratio and "b1" in names and "b2" in names:
        # The two same-cadence variants behind "exactly-once at 1 s vs at-least-once".
        for variant, after in (("b1-1s", "b1"), ("b2-1s", "b2")):
            if variant not in names:
                names.insert(names.index(after) + 1, variant)
    return [CONTENDERS[n] for n in names]


def prepare_workload(
    name: Workload, args: argparse.Namespace, run_id: str, admin: kafka.Broker
) -> tuple[WorkloadInput, str | None]:
    """Create and fill the input topic (and register the schema); return it and the subject."""
    topic = f"bench-{run_id}-{name}-in"
    subject: str | None = None
    schema_id: int | None = None
    if name == "avro":
        subject = f"{topic}-value"
        schema_id = kafka.register_schema(args.schema_registry, subject, ORDER_SCHEMA_STR)
        records = build_avro(args.records, args.keys, args.seed, schema_id)
    else:
        records = build_raw(args.records, args.keys, args.seed)
    admin.create_topics([topic], args.partitions)
    kafka.produce_input(args.bootstrap, topic, records)
    count = kafka.count_records(args.bootstrap, topic, args.partitions)
    if count != args.records:
        raise SystemExit(f"{topic} holds {count} records, expected {args.records}")
    warm_s = kafka.read_through(args.bootstrap, topic, args.partitions, args.records)
    mean_bytes = statistics.fmean(len(v) for _, v in records)
    print(
        f"[{name}] {args.records:,} records ({mean_bytes:.0f} B mean value) in {topic}; "
        f"read through once in {warm_s:.1f} s",
        flush=True,
    )
    values = frozenset(v for _, v in records)
    return WorkloadInput(name, topic, args.records, values, schema_id, mean_bytes), subject


def describe_machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()
    return {
        "date": dt.datetime.now(dt.UTC).date().isoformat(),
        "nproc": os.cpu_count(),
        "mem_total_gib": round(int(meminfo[1]) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "cpu_layout": "shared (no pinning); broker and other users' tests on the same 2 cores",
    }


def describe_worktree() -> dict[str, Any]:
    """The commit "ours" ran from, and whether the worktree had uncommitted changes."""
    git = shutil.which("git")
    if git is None:
        return {"commit": None}

    def out(*args: str) -> str:
        done = subprocess.run([git, *args], cwd=REPO_ROOT, capture_output=True, check=False)
        return done.stdout.decode().strip()

    return {"commit": out("rev-parse", "HEAD"), "dirty": bool(out("status", "--porcelain"))}


def progress(result: RunResult) -> str:
    if result.status != "ok":
        return (
            f"  r{result.round} {result.workload:<4} {result.contender:<6} {result.status}: "
            f"{result.problem}  (log: {result.log})"
        )
    rate = cast("float", result.records_per_s)
    return (
        f"  r{result.round} {result.workload:<4} {result.contender:<6} {rate:>10,.0f} rec/s  "
        f"{result.cpu_us_per_record:6.1f} CPU-µs/rec  peak {result.peak_rss_mib:5.0f} MiB  "
        f"host busy {result.host_busy_cores or 0:.2f} cores"
    )


def _key_values(items: list[str], option: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{option} takes KEY=VALUE, not {item!r}")
        found[key] = value
    return found


def build_settings(args: argparse.Namespace, run_id: str) -> RunSettings:
    overrides = {k: int(v) for k, v in (item.split("=", 1) for item in args.records_for)}
    return RunSettings(
        run_id=run_id,
        bootstrap_servers=args.bootstrap,
        schema_registry_url=args.schema_registry,
        partitions=args.partitions,
        consume_batch=args.consume_batch,
        txn_max_records=args.txn_records,
        txn_interval_s=args.txn_interval,
        linger_ms=args.linger_ms,
        retry_backoff_ms=args.retry_backoff_ms,
        fetch_queue_backoff_ms=args.fetch_queue_backoff_ms,
        consumer_settings=_key_values(args.consumer_setting, "--consumer-setting"),
        producer_settings=_key_values(args.producer_setting, "--producer-setting"),
        timeout_s=args.timeout,
        work_dir=Path(tempfile.mkdtemp(prefix=f"streams-bench-{run_id}-")),
        interpreters={"main": sys.executable, "peers": args.peers_python},
        records_override=overrides,
    )


def prepare_contenders(contenders: list[Contender], unavailable: dict[str, str]) -> None:
    """Run the build step of the contenders that have one (cached by the contender itself)."""
    for contender in contenders:
        if not contender.prepare or contender.name in unavailable:
            continue
        module = importlib.import_module(contender.module)
        try:
            print(module.prepare(), flush=True)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            unavailable[contender.name] = f"build failed: {exc}"
            print(f"{contender.name}: not available ({exc})", flush=True)


def run_rounds(
    args: argparse.Namespace,
    settings: RunSettings,
    admin: kafka.Broker,
    contenders: list[Contender],
    inputs: dict[Workload, WorkloadInput],
    *,
    unavailable: dict[str, str],
) -> list[RunResult]:
    """Warm up, then run every contender once per round and workload, in a rotated order."""
    results: list[RunResult] = []
    if not args.no_warmup:
        for workload in inputs.values():
            warm = run_contender(settings, admin, CONTENDERS[WARMUP_CONTENDER], workload, 0)
            results.append(warm)
            print(progress(warm) + "  (warm-up, not counted)", flush=True)
    for round_no in range(1, args.rounds + 1):
        shift = (round_no - 1) % len(contenders)
        order = contenders[shift:] + contenders[:shift]
        print(f"round {round_no}: {' '.join(c.name for c in order)}", flush=True)
        for workload in inputs.values():
            for contender in order:
                if contender.name in unavailable:
                    continue
                result = run_contender(settings, admin, contender, workload, round_no)
                results.append(result)
                print(progress(result), flush=True)
                if result.status == "not available":
                    unavailable[contender.name] = result.problem or "not available"
    return results


def clean_up(
    args: argparse.Namespace, admin: kafka.Broker, run_id: str, subjects: list[str]
) -> None:
    """Delete every topic, group and subject of this run, whatever happened."""
    leftovers = admin.delete_topics(admin.topics_containing(run_id))
    # A group whose member was killed stays "not empty" until its session times out
    # (faust: 60 s), so retry for a while.
    deadline = time.monotonic() + GROUP_CLEANUP_S
    while (groups := admin.groups_containing(run_id)) and time.monotonic() < deadline:
        admin.delete_groups(groups)
        time.sleep(5)
    leftovers += admin.delete_groups(admin.groups_containing(run_id))
    for subject in subjects:
        try:
            kafka.delete_subject(args.schema_registry, subject)
        except (SchemaRegistryError, OSError) as exc:
            leftovers.append(f"subject {subject}: {exc}")
    if leftovers:
        print(f"cleanup problems: {leftovers}", file=sys.stderr)


def print_and_summarize(
    args: argparse.Namespace,
    results: list[RunResult],
    contenders: list[Contender],
    inputs: dict[Workload, WorkloadInput],
) -> dict[str, Any]:
    names = [c.name for c in contenders]
    summary: dict[str, Any] = {}
    for name, workload in inputs.items():
        rows = summarize(results, name, names)
        ratios = eos_ratios(results, name)
        phases = startup_phases(results, name)
        summary[name] = {
            "records": workload.records,
            "mean_value_bytes": workload.mean_value_bytes,
            "contenders": [dataclasses.asdict(s) for s in rows],
            "eos_vs_alos": ratios,
            "startup_phases": phases,
        }
        print(
            f"\n### {name}: {workload.records:,} records, {workload.mean_value_bytes:.0f} B mean "
            f"value, {args.partitions} partitions, {args.rounds} rounds "
            "(medians; ratios taken within each round)"
        )
        print(format_table(rows))
        for text in (format_eos_ratios(ratios), format_startup_phases(phases)):
            if text:
                print(text)
    return summary


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    run_id = uuid.uuid4().hex[:8]
    contenders = resolve_contenders(args)
    workloads = cast("list[Workload]", [w.strip() for w in args.workload.split(",") if w.strip()])
    settings = build_settings(args, run_id)
    started = dt.datetime.now(dt.UTC)
    worktree = describe_worktree()
    print(f"run {run_id}: work dir {settings.work_dir}", flush=True)
    unavailable = {
        c.name: f"{args.peers_python} missing: run bench/setup-peers.sh"
        for c in contenders
        if c.interpreter == "peers" and not Path(args.peers_python).exists()
    }
    prepare_contenders(contenders, unavailable)
    admin = kafka.Broker(args.bootstrap)
    subjects: list[str] = []
    inputs: dict[Workload, WorkloadInput] = {}
    try:
        for name in workloads:
            inputs[name], subject = prepare_workload(name, args, run_id, admin)
            subjects += [subject] if subject else []
        results = run_rounds(args, settings, admin, contenders, inputs, unavailable=unavailable)
    finally:
        clean_up(args, admin, run_id, subjects)

    summary = print_and_summarize(args, results, contenders, inputs)
    for contender_name, why in unavailable.items():
        print(f"{contender_name}: not available ({why})")
    payload = {
        "run_id": run_id,
        "started": started.isoformat(),
        "finished": dt.datetime.now(dt.UTC).isoformat(),
        "argv": argv,
        "machine": describe_machine(),
        "worktree": worktree,
        "broker": {"bootstrap": args.bootstrap, "schema_registry": args.schema_registry},
        "settings": {
            k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(settings).items()
        },
        # ours reads STREAMS_* settings (streams.config) from the environment it inherits
        "streams_environment": {k: v for k, v in os.environ.items() if k.startswith("STREAMS_")},
        "contenders": {c.name: dataclasses.asdict(c) for c in contenders},
        "unavailable": unavailable,
        "summary": summary,
        "runs": [dataclasses.asdict(r) for r in results],
    }
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\nresults: {out}\nlogs: {settings.work_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
