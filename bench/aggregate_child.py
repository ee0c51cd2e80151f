"""One timed run of the windowed-aggregation benchmark, in a process of its own.

    python -m bench.aggregate_child SPEC.json

``SPEC.json`` names the contender and the topics; the run prints one JSON line: records,
the monotonic times of the first and the last record, peak RSS, and what the contender
reports (changelog bytes, restore seconds). The contenders (``bench/aggregate.py``):

* ``plain``: this project's StageRunner; the handler keeps the same tumbling windows in a
  dict (no changelog, nothing survives a crash) and returns each closed window's total;
* ``aggregate`` / ``aggregate-memory`` / ``aggregate-sqlite``: AggregateRunner, exactly-once
  state (changelog in the transaction) in RocksDB, memory or SQLite;
* ``quix``: Quix Streams, exactly-once, ``tumbling_window(...).sum().final()`` (RocksDB and
  changelog topics, its defaults); runs under ``.bench-venv``;
* ``faust`` / ``faust-eos``: a faust agent adding into a tumbling table (memory store,
  changelog topic); ``faust-eos`` with this project's send patch (the changelog and the
  agent's sends in the source transaction); ``exactly_once`` in both;
* ``restore``: an AggregateRunner restoring a changelog into an empty store, then stopping.

Event time is the record timestamp in every contender (the workload writes them 1 ms apart).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

WINDOW_S = 10.0
GRACE_S = 1.0


def _done(spec: dict[str, Any], first: float, last: float, **extra: Any) -> None:
    report = {
        "contender": spec["contender"],
        "records": spec["records"],
        "first": first,
        "last": last,
        "rss_max_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **extra,
    }
    print(json.dumps(report), flush=True)


def _watch_first(stats: Any, marks: dict[str, float]) -> None:
    while "first" not in marks:
        if stats.consumed > 0:
            marks["first"] = time.monotonic()
            return
        time.sleep(0.001)


def run_ours(spec: dict[str, Any]) -> None:
    from streams.aggregate import AggregateRunner  # noqa: PLC0415
    from streams.codecs import raw  # noqa: PLC0415
    from streams.config import KafkaSettings, StageSettings, StateSettings  # noqa: PLC0415
    from streams.pipeline import Pipeline  # noqa: PLC0415
    from streams.stage import StageRunner  # noqa: PLC0415
    from streams.windows import Tumbling  # noqa: PLC0415

    kafka = KafkaSettings(
        bootstrap_servers=spec["bootstrap"],
        kafka_extra={"fetch.queue.backoff.ms": 10, "retry.backoff.ms": 10},
    )
    settings = StageSettings(stats_interval_s=3600)
    pipeline = Pipeline(spec["pipeline"], partitions=spec["partitions"])
    contender = spec["contender"]
    runner: Any
    if contender == "plain":
        pipeline.add_stage(
            "agg", _plain_handler(), inputs=[spec["input"]], outputs={spec["output"]: raw()}
        )
        runner = StageRunner(pipeline.get("agg"), kafka=kafka, settings=settings)
    else:
        store = {"aggregate": "rocksdb", "aggregate-memory": "memory"}.get(contender, "sqlite")
        window = None if spec.get("table") else Tumbling(WINDOW_S, grace_s=GRACE_S)
        pipeline.aggregate(
            "agg",
            inputs=[spec["input"]],
            outputs=[spec["output"]],
            initial=0,
            window=window,
            store=store,  # type: ignore[arg-type]
            retry=None,
        )(lambda total, record: total + int(record.value))
        component = pipeline.component("agg")
        assert component.kind == "aggregate"  # noqa: S101
        runner = AggregateRunner(
            component,
            kafka=kafka,
            settings=settings,
            state=StateSettings(dir=Path(spec["work_dir"]) / "state"),
        )
    marks: dict[str, float] = {}
    threading.Thread(target=_watch_first, args=(runner.stats, marks), daemon=True).start()
    runner.run(max_records=spec["records"], idle_timeout_s=30)
    last = time.monotonic()
    stats = runner.stats
    _done(
        spec,
        marks.get("first", last),
        last,
        consumed=stats.consumed,
        changelog_bytes=getattr(stats, "changelog_bytes", 0),
        changelog_records=getattr(stats, "changelog_records", 0),
        emitted=stats.produced,
    )


def _plain_handler() -> Any:
    """The same tumbling sums, in a dict: what the aggregate does, without durable state."""
    from streams.record import Output  # noqa: PLC0415

    size = round(WINDOW_S * 1000)
    grace = round(GRACE_S * 1000)
    # per partition: window start -> key -> sum, and the largest event time seen
    open_windows: dict[int, dict[int, dict[str | None, int]]] = {}
    marks: dict[int, int] = {}

    def handle(record: Any) -> list[Output]:
        at = record.timestamp_ms
        partition = record.partition
        seen = marks.get(partition, at)
        start = at - at % size
        if start + size <= seen - grace:
            return []  # late
        windows = open_windows.setdefault(partition, {})
        sums = windows.setdefault(start, {})
        sums[record.key] = sums.get(record.key, 0) + int(record.value)
        if at <= seen:
            marks[partition] = seen
            return []
        marks[partition] = at
        closed = [s for s in windows if s + size <= at - grace]
        return [
            Output(str(total).encode(), key=key)
            for s in closed
            for key, total in windows.pop(s).items()
        ]

    return handle


def run_restore(spec: dict[str, Any]) -> None:
    """Restore the changelog of ``spec['group']`` into an empty store; time it; stop."""
    from streams.aggregate.restore import RestoreProgress, Restorer  # noqa: PLC0415
    from streams.config import KafkaSettings  # noqa: PLC0415

    progress = RestoreProgress()
    restorer = Restorer(
        group_id=spec["group"],
        changelog=spec["changelog"],
        kafka=KafkaSettings(bootstrap_servers=spec["bootstrap"]),
        store_kind=spec["store"],
        state_dir=Path(spec["work_dir"]) / f"restore-{spec['store']}-{time.time_ns()}",
        progress=progress,
    )
    first = time.monotonic()
    stores = restorer.restore(range(spec["partitions"]))
    last = time.monotonic()
    keys = sum(store.count() for store in stores.values())
    _done(spec, first, last, restored=progress.restored, keys=keys, store=spec["store"])


def run_quix(spec: dict[str, Any]) -> None:
    from datetime import timedelta  # noqa: PLC0415

    from quixstreams import Application  # noqa: PLC0415

    marks: dict[str, float] = {}
    count = {"n": 0}

    def mark(value: Any) -> Any:
        count["n"] += 1
        if count["n"] == 1:
            marks["first"] = time.monotonic()
        if count["n"] == spec["records"]:
            marks["last"] = time.monotonic()
        return int(value)

    app = Application(
        broker_address=spec["bootstrap"],
        consumer_group=spec["group"],
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_interval=1.0,
        commit_every=5000,
        state_dir=Path(spec["work_dir"]) / "quix-state",
        consumer_extra_config={"fetch.queue.backoff.ms": 10},
        producer_extra_config={"retry.backoff.ms": 10},
        loglevel="WARNING",
    )
    source = app.topic(spec["input"], key_deserializer="str", value_deserializer="bytes")
    sink = app.topic(spec["output"], key_serializer="str", value_serializer="json")
    sdf = app.dataframe(source).apply(mark)
    sdf = sdf.tumbling_window(
        duration_ms=timedelta(seconds=WINDOW_S), grace_ms=timedelta(seconds=GRACE_S)
    )
    sdf.sum().final().to_topic(sink)
    app.run(count=spec["records"], timeout=120)
    _done(spec, marks.get("first", 0.0), marks.get("last", time.monotonic()))


def run_faust(spec: dict[str, Any]) -> None:
    import faust  # noqa: PLC0415

    if spec["contender"] == "faust-eos":
        from streams.agents.faust_stage import route_sends_to_source_transaction  # noqa: PLC0415

        route_sends_to_source_transaction()
    app = faust.App(
        spec["group"],
        broker=f"kafka://{spec['bootstrap']}",
        processing_guarantee="exactly_once",
        broker_commit_every=5000,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        topic_partitions=spec["partitions"],
        web_enabled=False,
        store="memory://",
        datadir=str(Path(spec["work_dir"]) / "faust"),
    )
    source = app.topic(
        spec["input"], key_type=bytes, value_type=bytes, key_serializer="raw",
        value_serializer="raw", partitions=spec["partitions"],
    )  # fmt: skip
    table = (
        app.Table("sums", default=int, partitions=spec["partitions"])
        .tumbling(WINDOW_S, expires=WINDOW_S + GRACE_S)
        .relative_to_stream()
    )
    marks: dict[str, float] = {}

    async def add(stream: Any) -> None:
        n = 0
        async for event in stream.events():
            n += 1
            if n == 1:
                marks["first"] = time.monotonic()
            table[event.key] += int(event.value)
            if n == spec["records"]:
                marks["last"] = time.monotonic()
                _done(spec, marks["first"], marks["last"])
                os.kill(os.getpid(), signal.SIGTERM)

    app.agent(source, name="add")(add)
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    Path(spec["work_dir"]).mkdir(parents=True, exist_ok=True)
    contender = spec["contender"]
    if contender == "quix":
        run_quix(spec)
    elif contender.startswith("faust"):
        run_faust(spec)
    elif contender == "restore":
        run_restore(spec)
    else:
        run_ours(spec)


if __name__ == "__main__":
    main()
