"""Turning run results into per-workload summaries and printed tables.

``python -m bench.report bench/results/<timestamp>.json`` prints the tables of a saved run again.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.execute import RunResult

BASELINE = "b2"
ALOS = "b1"
ALOS_1S = "b1-1s"
EOS_1S = "b2-1s"


@dataclass(frozen=True, slots=True)
class Summary:
    """One contender on one workload, over the timed rounds."""

    contender: str
    workload: str
    status: str
    records: int | None
    rounds_ok: int
    rounds: int
    records_per_s: float | None
    records_per_s_min: float | None
    records_per_s_max: float | None
    ratio_vs_b2: float | None
    ratio_vs_b2_rounds: list[float]
    cpu_us_per_record: float | None
    cpu_total_us_per_record: float | None
    peak_rss_mib: float | None
    end_rss_mib: float | None
    startup_s: float | None
    # Offsets holding no record in the output (transaction markers): 0 = no transactions.
    txn_markers: float | None


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _per_round_ratios(
    results: Sequence[RunResult], workload: str, numerator: str, denominator: str
) -> list[float]:
    """numerator/denominator records/s, each ratio taken within one round."""
    by_round: dict[int, dict[str, float]] = {}
    for r in results:
        if r.workload == workload and r.round > 0 and r.records_per_s is not None:
            by_round.setdefault(r.round, {})[r.contender] = r.records_per_s
    return [
        rates[numerator] / rates[denominator]
        for _, rates in sorted(by_round.items())
        if numerator in rates and denominator in rates
    ]


def summarize(
    results: Sequence[RunResult], workload: str, contenders: Sequence[str]
) -> list[Summary]:
    summaries: list[Summary] = []
    for name in contenders:
        runs = [
            r for r in results if r.workload == workload and r.contender == name and r.round > 0
        ]
        ok = [r for r in runs if r.status == "ok"]
        if not runs:
            continue
        if ok:
            status = "ok" if len(ok) == len(runs) else f"{len(runs) - len(ok)} run(s) failed"
        elif all(r.status == "not available" for r in runs):
            status = "not available"
        else:
            status = f"{runs[0].status}: {runs[0].problem}"
        rates = [r.records_per_s for r in ok if r.records_per_s is not None]
        ratios = _per_round_ratios(results, workload, name, BASELINE)
        summaries.append(
            Summary(
                contender=name,
                workload=workload,
                status=status,
                records=runs[0].records,
                rounds_ok=len(ok),
                rounds=len(runs),
                records_per_s=_median(rates),
                records_per_s_min=min(rates) if rates else None,
                records_per_s_max=max(rates) if rates else None,
                ratio_vs_b2=_median(ratios),
                ratio_vs_b2_rounds=ratios,
                cpu_us_per_record=_median(r.cpu_us_per_record for r in ok),
                cpu_total_us_per_record=_median(r.cpu_total_us_per_record for r in ok),
                peak_rss_mib=_median(r.peak_rss_mib for r in ok),
                end_rss_mib=_median(r.end_rss_mib for r in ok),
                startup_s=_median(r.startup_s for r in ok),
                txn_markers=_median(r.output_marker_offsets for r in ok),
            )
        )
    return summaries


# Start-up phases a contender may write into its report (kstreams: the JVM's), in seconds.
STARTUP_PHASES = ("jvm_start_s", "main_to_running_s", "running_to_first_record_s")


def startup_phases(results: Sequence[RunResult], workload: str) -> dict[str, dict[str, float]]:
    """Per contender, the median of each start-up phase its runs reported (outside the window)."""
    phases: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(r.contender for r in results if r.workload == workload):
        ok = [r for r in results if r.workload == workload and r.contender == name and r.round > 0]
        medians = {
            phase: _median(
                float(r.report[phase]) for r in ok if r.status == "ok" and phase in r.report
            )
            for phase in STARTUP_PHASES
        }
        present = {phase: v for phase, v in medians.items() if v is not None}
        if present:
            phases[name] = present
    return phases


def format_startup_phases(phases: dict[str, dict[str, float]]) -> str:
    return "\n".join(
        f"{name} start-up (medians, outside the window): "
        + ", ".join(f"{phase} {value:.2f}" for phase, value in values.items())
        for name, values in phases.items()
    )


def eos_ratios(results: Sequence[RunResult], workload: str) -> dict[str, list[float]]:
    """Exactly-once vs at-least-once, each ratio taken within a round."""
    return {
        f"{EOS_1S}/{ALOS}": _per_round_ratios(results, workload, EOS_1S, ALOS),
        f"{EOS_1S}/{ALOS_1S}": _per_round_ratios(results, workload, EOS_1S, ALOS_1S),
        f"{BASELINE}/{ALOS}": _per_round_ratios(results, workload, BASELINE, ALOS),
    }


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def format_table(summaries: Sequence[Summary]) -> str:
    """A Markdown table (pasted as is into bench/README.md)."""
    header = (
        "| contender | records | rec/s (median) | min-max | vs B2 | CPU-µs/rec window "
        "| CPU-µs/rec process | peak RSS MiB | end RSS MiB | start s | txn markers | status |"
    )
    lines = [header, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
    for s in summaries:
        span = (
            "-"
            if s.records_per_s_min is None
            else f"{s.records_per_s_min:,.0f}-{s.records_per_s_max:,.0f}"
        )
        lines.append(
            f"| {s.contender} | {_fmt(s.records, ',')} | {_fmt(s.records_per_s, ',.0f')} | {span} "
            f"| {_fmt(s.ratio_vs_b2, '.2f')} | {_fmt(s.cpu_us_per_record, '.1f')} "
            f"| {_fmt(s.cpu_total_us_per_record, '.1f')} | {_fmt(s.peak_rss_mib, '.0f')} "
            f"| {_fmt(s.end_rss_mib, '.0f')} | {_fmt(s.startup_s, '.1f')} "
            f"| {_fmt(s.txn_markers, ',.0f')} | {s.status} |"
        )
    return "\n".join(lines)


def format_eos_ratios(ratios: dict[str, list[float]]) -> str:
    lines = []
    for name, values in ratios.items():
        if values:
            rounds = ", ".join(f"{v:.2f}" for v in values)
            lines.append(f"{name} = {statistics.median(values):.2f} (median; rounds: {rounds})")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench.report RESULTS.json", file=sys.stderr)
        return 2
    payload = json.loads(Path(argv[0]).read_text())
    results = [RunResult(**run) for run in payload["runs"]]
    contenders = list(payload["contenders"])
    for workload, facts in payload["summary"].items():
        print(f"\n### {workload}: {facts.get('records', '?'):,} records")
        print(format_table(summarize(results, workload, contenders)))
        text = format_eos_ratios(eos_ratios(results, workload))
        if text:
            print(text)
        text = format_startup_phases(startup_phases(results, workload))
        if text:
            print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
