"""Windowed aggregation: ours (exactly-once state) against a stateless stage and the peers.

    .venv/bin/python -m bench.aggregate --records 200000 --rounds 3 \\
        --contenders plain,aggregate,quix,faust,faust-eos --records-for faust=20000 \\
        --records-for faust-eos=20000 --restore-keys 1000000

Every contender drains the same pre-filled input topic (4 partitions, ``--keys`` keys, record
timestamps 1 ms apart) into tumbling windows of 10 s with 1 s of grace, summing the values,
each in a process of its own (``bench/aggregate_child.py``), rounds alternating the order.
Throughput is records / (last record - first record) as the contender saw them. Then, with
``--restore-keys``, a table of that many distinct keys is built once and restored into an
empty store of each kind per round: seconds and peak RSS. Everything lands in
``bench/results/aggregate-<UTC time>.json``; the table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
PEERS_PYTHON = ROOT / ".bench-venv" / "bin" / "python"
PARTITIONS = 4


def _produce(bootstrap: str, topic: str, records: int, keys: int) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 50, "enable.idempotence": True}
    )
    start = time.time_ns() // 1_000_000 - records - 60_000  # in the past, 1 ms apart
    for n in range(records):
        while True:
            try:
                producer.produce(
                    topic, str(n % 100).encode(), f"k{n % keys}".encode(), timestamp=start + n
                )
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120) != 0:
        raise TimeoutError(f"could not fill {topic}")


def _topics(admin: AdminClient, names: list[str], config: dict[str, str] | None = None) -> None:
    futures = admin.create_topics(
        [
            NewTopic(n, num_partitions=PARTITIONS, replication_factor=1, config=config or {})
            for n in names
        ]
    )
    for future in futures.values():
        future.result(timeout=30)


def _child(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    path = work / f"{spec['contender']}-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(spec))
    python = str(PEERS_PYTHON) if spec["contender"] == "quix" else sys.executable
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [python, "-m", "bench.aggregate_child", str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    # faust sends its stdout through its logging: the report may be inside a log line
    lines = [
        line[line.index('{"contender"') :]
        for line in (done.stdout + done.stderr).splitlines()
        if '{"contender"' in line
    ]
    if not lines:
        raise RuntimeError(f"{spec['contender']} failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["rate"] = round(result["records"] / max(result["last"] - result["first"], 1e-9))
    return result


def _ours_topics(admin: AdminClient, spec: dict[str, Any]) -> None:
    """The topics an aggregate needs; ours never creates topics by itself."""
    group = f"{spec['pipeline']}.agg"
    names = [spec["output"], f"{group}.dlq", *(f"{group}.retry.{t}" for t in ("5s", "30s", "5m"))]
    _topics(admin, names)
    _topics(admin, [f"{group}.changelog"], {"cleanup.policy": "compact"})


def throughput(args: argparse.Namespace, admin: AdminClient, work: Path) -> list[dict[str, Any]]:
    source = f"benchagg-{uuid.uuid4().hex[:8]}.in"
    _topics(admin, [source])
    _produce(args.bootstrap, source, args.records, args.keys)
    contenders = args.contenders.split(",")
    limits = dict(item.split("=") for item in args.records_for)
    runs = []
    for round_ in range(args.rounds):
        order = contenders[round_ % len(contenders) :] + contenders[: round_ % len(contenders)]
        for contender in order:
            run_id = uuid.uuid4().hex[:8]
            spec = {
                "contender": contender,
                "bootstrap": args.bootstrap,
                "input": source,
                "output": f"benchagg-{run_id}.out",
                "pipeline": f"benchagg{run_id}",
                "group": f"benchagg{run_id}.agg",
                "partitions": PARTITIONS,
                "records": int(limits.get(contender, args.records)),
                "work_dir": str(work / run_id),
            }
            if contender == "quix" or contender.startswith("faust"):
                _topics(admin, [spec["output"]])
            else:
                _ours_topics(admin, spec)
            result = _child(spec, work)
            result["round"] = round_
            runs.append(result)
            print(f"round {round_} {contender}: {result['rate']:,} rec/s", flush=True)
    return runs


def restore(args: argparse.Namespace, admin: AdminClient, work: Path) -> list[dict[str, Any]]:
    """Build a table of ``--restore-keys`` keys once, then restore it per store and round."""
    run_id = uuid.uuid4().hex[:8]
    source = f"benchagg-{run_id}.keys"
    _topics(admin, [source])
    _produce(args.bootstrap, source, args.restore_keys, args.restore_keys)
    spec = {
        "contender": "aggregate-memory",
        "bootstrap": args.bootstrap,
        "input": source,
        "output": f"benchagg-{run_id}.out",
        "pipeline": f"benchagg{run_id}",
        "group": f"benchagg{run_id}.agg",
        "partitions": PARTITIONS,
        "records": args.restore_keys,
        "work_dir": str(work / run_id),
        "table": True,
    }
    _ours_topics(admin, spec)
    built = _child(spec, work)
    print(f"table of {args.restore_keys:,} keys built at {built['rate']:,} rec/s", flush=True)
    runs = []
    for round_ in range(args.rounds):
        for store in ("rocksdb", "memory", "sqlite"):
            result = _child(
                {
                    **spec,
                    "contender": "restore",
                    "store": store,
                    "changelog": f"{spec['group']}.changelog",
                },
                work,
            )
            result["round"] = round_
            result["seconds"] = round(result["last"] - result["first"], 2)
            runs.append(result)
            print(
                f"round {round_} restore {store}: {result['seconds']} s, "
                f"{result['rss_max_mib']} MiB, {result['keys']:,} keys",
                flush=True,
            )
    return [{"built": built}, *runs]


def _summary(runs: list[dict[str, Any]], restores: list[dict[str, Any]]) -> dict[str, Any]:
    by: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by.setdefault(run["contender"], []).append(run)
    rates = {c: [r["rate"] for r in found] for c, found in by.items()}
    ratios: dict[str, list[float]] = {}
    for other in rates:
        if other == "aggregate":
            continue
        per_round = []
        for round_ in sorted({r["round"] for r in runs}):
            mine = [r["rate"] for r in by.get("aggregate", []) if r["round"] == round_]
            theirs = [r["rate"] for r in by[other] if r["round"] == round_]
            if mine and theirs:
                per_round.append(round(mine[0] / theirs[0], 3))
        ratios[f"aggregate/{other}"] = per_round
    aggregate = by.get("aggregate", [])
    summary = {
        "rates_median": {c: statistics.median(v) for c, v in rates.items()},
        "rates": rates,
        "ratios_median": {k: statistics.median(v) for k, v in ratios.items() if v},
        "ratios": ratios,
        "rss_max_mib_median": {
            c: statistics.median(r["rss_max_mib"] for r in found) for c, found in by.items()
        },
        "changelog_bytes_per_input_record": [
            round(r["changelog_bytes"] / r["records"], 2) for r in aggregate
        ],
    }
    stores = [r for r in restores if "store" in r]
    if stores:
        summary["restore"] = {
            store: {
                "seconds_median": statistics.median(
                    r["seconds"] for r in stores if r["store"] == store
                ),
                "seconds": [r["seconds"] for r in stores if r["store"] == store],
                "rss_max_mib": [r["rss_max_mib"] for r in stores if r["store"] == store],
                "keys": stores[0]["keys"],
            }
            for store in ("rocksdb", "memory", "sqlite")
        }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--contenders", default="plain,aggregate,quix,faust,faust-eos")
    parser.add_argument("--records-for", action="append", default=[], metavar="NAME=N")
    parser.add_argument("--restore-keys", type=int, default=0)
    args = parser.parse_args(argv)
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    work = Path(tempfile.mkdtemp(prefix="bench-aggregate-"))
    runs = throughput(args, admin, work) if args.contenders else []
    restores = restore(args, admin, work) if args.restore_keys else []
    result = {
        "command": " ".join(sys.argv),
        "records": args.records,
        "keys": args.keys,
        "rounds": args.rounds,
        "summary": _summary(runs, restores),
        "runs": runs,
        "restores": restores,
        "host": {"cpus": os.cpu_count(), "load": os.getloadavg()},
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"aggregate-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
