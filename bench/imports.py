"""What each import of a raw-stage worker costs in memory: ``python -m bench.imports``.

A worker (``streams run MODULE:PIPELINE --stage S`` starts ``python -m streams.runtime.worker``)
imports the chain in ``WORKER_STEPS``. Each step runs in a fresh interpreter that imports that
step's module and every module of the steps before it, then reads its own ``VmRSS`` from
``/proc/self/status``: the difference from the step before is what the step adds on top of
what the worker has already loaded. ``ALONE`` is each package imported alone in a fresh
interpreter (what it costs by itself, shared dependencies included). Every figure is the
median of ``--repeats`` interpreters. The result also lists the third-party packages a worker
has loaded once it is ready to run, and ``-X importtime``'s slowest imports of the worker
module. It goes to ``bench/results/imports-<UTC>.json``.

Needs no broker: nothing is connected, only imported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.run import describe_worktree

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
WORKER_MODULE = "streams.runtime.worker"

# The order in which a worker process loads them (each one's own dependencies first). The
# first import of any streams module runs the facade (streams/__init__.py): config, pipeline,
# codecs, the testing harness, the database layer.
WORKER_STEPS: tuple[str, ...] = (
    "asyncio",
    "confluent_kafka",
    "pydantic",
    "pydantic_settings",
    "streams",
    "streams.stage",
    WORKER_MODULE,
)

# Each alone in a fresh interpreter; those not installed are reported as missing.
ALONE: tuple[str, ...] = (
    "asyncio",
    "confluent_kafka",
    "confluent_kafka.schema_registry",
    "fastavro",
    "pydantic",
    "pydantic_settings",
    "prometheus_client",
    "sqlalchemy",
    "click",
    "rich",
    "httpx",
    "faust",
    "streams.stage",
    WORKER_MODULE,
    "streams.cli.main",
)

# Run in the child: import the modules named in argv, print what the process holds.
_PROBE = """
import importlib, json, sys
def status():
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields
missing = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ImportError:
        missing.append(name)
tops = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps({**status(), "modules": len(sys.modules), "top_level": tops, "missing": missing}))
"""


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter on this checkout, run to its end (output captured)."""
    return subprocess.run(
        [sys.executable, *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )


def _probe(modules: list[str]) -> dict[str, Any]:
    done = _python("-c", _PROBE, *modules)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _median_probe(modules: list[str], repeats: int) -> dict[str, Any]:
    runs = [_probe(modules) for _ in range(repeats)]
    return {
        "rss_mib": round(statistics.median(r["VmRSS"] for r in runs), 1),
        "hwm_mib": round(statistics.median(r["VmHWM"] for r in runs), 1),
        "rss_mib_runs": [round(r["VmRSS"], 1) for r in runs],
        "modules": runs[0]["modules"],
        "top_level": runs[0]["top_level"],
        "missing": runs[0]["missing"],
    }


def _stdlib_names() -> frozenset[str]:
    return frozenset(sys.stdlib_module_names) | {"__main__", "_distutils_hack", "streams"}


def _importtime(module: str, top: int) -> list[dict[str, Any]]:
    """``-X importtime``'s ``top`` imports of ``module`` by cumulative time (µs)."""
    done = _python("-X", "importtime", "-c", f"import {module}")
    rows: list[dict[str, Any]] = []
    for line in done.stderr.splitlines():
        found = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if found:
            rows.append(
                {
                    "module": found.group(4),
                    "self_us": int(found.group(1)),
                    "cumulative_us": int(found.group(2)),
                    "depth": len(found.group(3)) // 2,
                }
            )
    rows.sort(key=lambda row: int(row["cumulative_us"]), reverse=True)
    return rows[:top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="interpreters per figure")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    stdlib = _stdlib_names()

    baseline = _median_probe([], args.repeats)
    steps: list[dict[str, Any]] = []
    previous = baseline
    print(f"{'step':32} {'RSS MiB':>8} {'+MiB':>6}  new third-party packages")
    print(f"{'(interpreter)':32} {baseline['rss_mib']:8.1f}")
    for index, module in enumerate(WORKER_STEPS):
        found = _median_probe(list(WORKER_STEPS[: index + 1]), args.repeats)
        new = sorted(set(found["top_level"]) - set(previous["top_level"]) - stdlib - {module})
        added = round(found["rss_mib"] - previous["rss_mib"], 1)
        steps.append({"step": module, **found, "added_mib": added, "new_packages": new})
        print(f"{module:32} {found['rss_mib']:8.1f} {added:6.1f}  {', '.join(new)}")
        previous = found

    alone: list[dict[str, Any]] = []
    print(f"\n{'alone':32} {'RSS MiB':>8} {'+MiB':>6}")
    for module in ALONE:
        found = _median_probe([module], args.repeats)
        if found["missing"]:
            alone.append({"module": module, "missing": True})
            print(f"{module:32} {'not installed':>15}")
            continue
        added = round(found["rss_mib"] - baseline["rss_mib"], 1)
        alone.append({"module": module, **found, "added_mib": added})
        print(f"{module:32} {found['rss_mib']:8.1f} {added:6.1f}")

    worker = next(entry for entry in alone if entry["module"] == WORKER_MODULE)
    third_party = sorted(set(worker["top_level"]) - stdlib)
    print(f"\nthird-party packages a worker loads: {', '.join(third_party)}")
    summary = {
        "benchmark": "imports",
        "started_utc": started.isoformat(),
        "repeats": args.repeats,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "executable": sys.executable,
        },
        "worktree": describe_worktree(),
        "method": (
            "fresh interpreter per figure; VmRSS after the imports; median of the repeats; "
            "steps are cumulative (a step imports every module of the steps before it)"
        ),
        "interpreter": {key: baseline[key] for key in ("rss_mib", "hwm_mib", "rss_mib_runs")},
        "worker_steps": steps,
        "alone": alone,
        "worker_third_party_packages": third_party,
        "worker_importtime_top": _importtime(WORKER_MODULE, 40),
    }
    for entry in [*steps, *alone]:
        entry.pop("top_level", None)
    args.results_dir.mkdir(exist_ok=True)
    path = args.results_dir / f"imports-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
