"""The stage's fast path against its general path, side by side: ``python -m bench.fast_path``.

One stage copies a pre-filled 4-partition topic of 100-byte records (keys from 128) to an
output topic, exactly once, with the default batch bounds, once per mode and round, in
alternating order, each run in a fresh process: ``fast`` (the default) and ``general``
(``STREAMS_STAGE_FAST_PATH=0``). Per run: records/s over the window from the first consumed
record to the end of the run, and the process's CPU time per record over the same window
(every thread: librdkafka's too). Ratios are taken within a round. The result goes to
``bench/results/fast_path-<UTC>.json``.

Needs the local broker (``streams local up``; ``--bootstrap``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]


def _child(bootstrap: str, topic: str, records: int) -> dict[str, float]:
    """One run in this process: the stage copies ``records`` from ``topic``."""
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415
    from confluent_kafka.cimpl import NewTopic  # noqa: PLC0415

    from streams.codecs import raw  # noqa: PLC0415
    from streams.config import KafkaSettings, StageSettings  # noqa: PLC0415
    from streams.pipeline import Pipeline  # noqa: PLC0415
    from streams.record import Output, Record  # noqa: PLC0415
    from streams.stage import StageRunner  # noqa: PLC0415

    name = f"fastbench{uuid.uuid4().hex[:8]}"
    first: list[float] = []

    def copy(record: Record[bytes]) -> Output:
        if not first:
            first.extend((time.monotonic(), time.process_time()))
        return Output(record.value)

    pipeline = Pipeline(name, partitions=4)
    stage = pipeline.add_stage("copy", copy, inputs=[topic], outputs={f"{name}.out": raw()})
    created = [f"{name}.out", *stage.retry_topics, stage.dlq_topic]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(t, num_partitions=4) for t in created])
    for future in futures.values():
        future.result(timeout=30)
    runner = StageRunner(
        stage,
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap,
            kafka_extra={"retry.backoff.ms": 10, "fetch.queue.backoff.ms": 10},
        ),
        settings=StageSettings(stats_interval_s=3600),
    )
    try:
        runner.run(max_records=records)
        wall = time.monotonic() - first[0]
        cpu = time.process_time() - first[1]
    finally:
        admin.delete_topics(created)
    return {"rec_per_s": records / wall, "cpu_us_per_record": cpu / records * 1e6}


def _fill(bootstrap: str, records: int) -> str:
    from confluent_kafka import Producer  # noqa: PLC0415
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415
    from confluent_kafka.cimpl import NewTopic  # noqa: PLC0415

    topic = f"fastbench-in-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=4)])[topic].result(timeout=30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for n in range(records):
        value = n.to_bytes(8, "big") + os.urandom(92)
        while True:
            try:
                producer.produce(topic, value, key=str(n % 128).encode())
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(120)
    return topic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--child", nargs=3, metavar=("BOOTSTRAP", "TOPIC", "RECORDS"))
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child[0], args.child[1], int(args.child[2]))))
        return 0
    topic = _fill(args.bootstrap, args.records)
    runs: list[dict[str, Any]] = []
    started = datetime.now(UTC)
    for round_no in range(1, args.rounds + 1):
        order = ["fast", "general"] if round_no % 2 else ["general", "fast"]
        for mode in order:
            env = {**os.environ, "PYTHONPATH": str(ROOT), "STREAMS_STAGE_FAST_PATH": "1"}
            if mode == "general":
                env["STREAMS_STAGE_FAST_PATH"] = "0"
            done = subprocess.run(
                [sys.executable, "-m", "bench.fast_path", "--child", args.bootstrap, topic,
                 str(args.records)],
                env=env, cwd=ROOT, capture_output=True, text=True, check=True, timeout=600,
            )  # fmt: skip
            result = json.loads(done.stdout.strip().splitlines()[-1])
            runs.append({"round": round_no, "mode": mode, **result})
            print(
                f"round {round_no} {mode:8} {result['rec_per_s']:10,.0f} rec/s "
                f"{result['cpu_us_per_record']:6.1f} CPU-us/rec"
            )
    by_round = {}
    for round_no in range(1, args.rounds + 1):
        pair = {r["mode"]: r for r in runs if r["round"] == round_no}
        by_round[round_no] = {
            "throughput_fast_over_general": pair["fast"]["rec_per_s"]
            / pair["general"]["rec_per_s"],
            "cpu_fast_over_general": pair["fast"]["cpu_us_per_record"]
            / pair["general"]["cpu_us_per_record"],
        }
    summary = {
        "benchmark": "fast_path",
        "started_utc": started.isoformat(),
        "records": args.records,
        "rounds": args.rounds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_at_start": os.getloadavg(),
        "runs": runs,
        "per_round": by_round,
        "median_throughput_ratio": statistics.median(
            r["throughput_fast_over_general"] for r in by_round.values()
        ),
        "median_cpu_ratio": statistics.median(
            r["cpu_fast_over_general"] for r in by_round.values()
        ),
        "median_cpu_us_per_record": {
            mode: statistics.median(r["cpu_us_per_record"] for r in runs if r["mode"] == mode)
            for mode in ("fast", "general")
        },
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"fast_path-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("median_throughput_ratio", "median_cpu_ratio",
                                              "median_cpu_us_per_record")}))  # fmt: skip
    print(f"wrote {path}")
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    AdminClient({"bootstrap.servers": args.bootstrap}).delete_topics([topic])
    return 0


if __name__ == "__main__":
    sys.exit(main())
