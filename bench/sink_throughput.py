"""SQL sink throughput: SinkRunner (rows + offsets in one DB transaction) against a plain loop.

Both read the same topic (N records, 4 partitions, written once per database) with a fresh
``read_committed`` consumer group and write one row per record keyed by where it entered
(``topic/partition@offset``) with ``INSERT ... ON CONFLICT DO NOTHING``:

- ``sink``: ``SinkRunner`` in this process, the handler queues its row with ``tx.add`` (sent as
  one ``executemany`` per batch at commit; ``--sink-handler execute`` runs one ``tx.execute``
  per record instead);
  the sink stores the offsets in ``streams_sink_offsets`` in the same transaction and commits
  them to Kafka afterwards (advisory);
- ``plain``: a consumer loop that collects a batch of the same size and writes it with one
  ``executemany``, one database transaction per batch, no offsets table, no Kafka commits.

Same connection settings for both (``streams.database``: SQLite in WAL mode with
``synchronous=FULL`` in a temporary folder; PostgreSQL started for the benchmark the way
tests/integration/postgres.py does, ``fsync=off``). Same batch rule for both:
``StageSettings.batch_max_records`` records or ``batch_max_ms``, whichever comes first.
Throughput = N / time from the first record consumed until the batch that holds the N-th row
is committed. Rounds alternate (the order is swapped every round); each run gets a fresh
database, consumer group and table, and the row count is checked after every run.

    python -m bench.sink_throughput [--records N] [--rounds R] [--db sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Message

from bench.failure_handling import (
    PARTITIONS,
    RESULTS,
    BenchError,
    alternate,
    delete_all,
    kafka_config,
    median,
    produce,
    round_table,
    utc_stamp,
    write_json,
)
from bench.failure_handling import (
    _print_profile as print_profile,
)
from streams.codecs import raw, text
from streams.config import KafkaSettings, SinkSettings, StageSettings
from streams.database import Database
from streams.pipeline import Pipeline
from streams.record import Record
from streams.sinks import SinkRunner, SinkSpec, SinkTransaction
from streams.sinks.batch import SqlBatch
from streams.topics import ensure_topics
from tests.integration.postgres import PostgresUnavailableError, create_database
from tests.integration.postgres import postgres_server as test_postgres_server

TABLE_SQL = "CREATE TABLE IF NOT EXISTS bench_rows (origin TEXT PRIMARY KEY, n BIGINT NOT NULL)"
INSERT_SQL = "INSERT INTO bench_rows (origin, n) VALUES (:origin, :n) ON CONFLICT DO NOTHING"


# "add": queue the row (one executemany per batch at commit, the fast form);
# "execute": one statement per record. Set by --sink-handler.
SINK_HANDLER = {"mode": "add"}


def store(record: Record[bytes], tx: SinkTransaction) -> None:
    row = {"origin": record.idempotency_key, "n": int(record.value[:10])}
    if SINK_HANDLER["mode"] == "add":
        tx.add(INSERT_SQL, row)
    else:
        tx.execute(INSERT_SQL, row)


class TimedSinkRunner(SinkRunner):
    """A SinkRunner that notes the first record consumed and the commit of the last row."""

    def __init__(self, *args: Any, target: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.target = target
        self.first_at: float | None = None
        self.done_at: float | None = None

    def _batch(self, *args: Any) -> SqlBatch:
        batch = super()._batch(*args)
        process, maybe_commit = batch.process, batch.maybe_commit

        def timed_process(messages: list[Message]) -> None:
            if messages and self.first_at is None:
                self.first_at = time.perf_counter()
            process(messages)

        def timed_commit(*, force: bool) -> None:
            maybe_commit(force=force)
            if self.done_at is None and self.stats.records_committed >= self.target:
                self.done_at = time.perf_counter()
                self.request_stop()

        batch.process = timed_process  # type: ignore[method-assign]
        batch.maybe_commit = timed_commit  # type: ignore[method-assign]
        return batch


@dataclass
class SinkRun:
    mode: str
    records: int
    seconds: float
    per_s: float
    batches: int
    details: dict[str, Any] = field(default_factory=dict)


# -- databases ----------------------------------------------------------------------------------


class Databases:
    """Hands out a fresh, empty database per run: a SQLite file or a PostgreSQL database."""

    def __init__(self, kind: str, workdir: Path, server_url: str | None) -> None:
        self.kind = kind
        self.workdir = workdir
        self.server_url = server_url

    def fresh(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.workdir / f'bench_{uuid.uuid4().hex[:10]}'}.db"
        assert self.server_url is not None  # noqa: S101 - set for postgresql
        return create_database(self.server_url, prefix="bench")


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """The sink tests' throwaway server (postgres user, trust, fsync off), errors as BenchError."""
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(test_postgres_server())
        except PostgresUnavailableError as error:
            raise BenchError(str(error)) from error
        yield url


def _count_rows(url: str) -> tuple[int, int]:
    with Database(url).connect() as db:
        count, distinct = db.execute("SELECT count(*), count(DISTINCT n) FROM bench_rows").rows[0]
        return int(count), int(distinct)


# -- the two contenders -------------------------------------------------------------------------


def run_sink(
    bootstrap: str, topic: str, records: int, url: str, settings: StageSettings,
    *, profile: Path | None = None,
) -> SinkRun:  # fmt: skip
    name = f"s{uuid.uuid4().hex[:10]}"
    spec = SinkSpec(
        pipeline="bench",
        name=name,
        inputs=(topic,),
        input_codec=raw(),
        key_codec=text(),
        database=url,
        handler=store,
        setup_sql=(TABLE_SQL,),
    )
    runner = TimedSinkRunner(
        spec,
        kafka=KafkaSettings(bootstrap_servers=bootstrap),
        settings=settings,
        sink_settings=SinkSettings(database_url=url),
        target=records,
    )
    profiler = cProfile.Profile() if profile else None
    try:
        if profiler:
            profiler.enable()
        runner.run(idle_timeout_s=30)
        if profiler and profile:
            profiler.disable()
            profiler.dump_stats(profile)
    finally:
        delete_all(bootstrap, [], [spec.group_id])
    if runner.first_at is None or runner.done_at is None:
        stats = runner.stats.snapshot(group=runner.spec.group_id, slot=0)
        raise BenchError(f"sink did not commit {records} rows: {stats}")
    seconds = runner.done_at - runner.first_at
    return SinkRun(
        "sink", records, seconds, records / seconds, runner.stats.batches_committed,
        runner.stats.snapshot(group=runner.spec.group_id, slot=0),
    )  # fmt: skip


def _rows(messages: list[Message]) -> list[dict[str, Any]]:
    rows = []
    for message in messages:
        if message.error() is not None:
            raise BenchError(f"consumer error: {message.error()}")
        value = message.value() or b""
        origin = f"{message.topic()}/{message.partition()}@{message.offset()}"
        rows.append({"origin": origin, "n": int(value[:10])})
    return rows


def run_plain(
    bootstrap: str, topic: str, records: int, url: str, settings: StageSettings,
    *, profile: Path | None = None,
) -> SinkRun:  # fmt: skip
    group = f"bench.p{uuid.uuid4().hex[:10]}"
    database = Database(url)
    db = database.connect()
    db.execute(TABLE_SQL)
    consumer = Consumer(
        kafka_config(
            bootstrap,
            **{
                "group.id": group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
            },
        )
    )
    consumer.subscribe([topic])
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    first_at: float | None = None
    written = batches = 0
    rows: list[dict[str, Any]] = []
    started = 0.0
    limit_s = settings.batch_max_ms / 1000
    idle_since = time.monotonic()
    try:
        while written < records:
            room = settings.batch_max_records - len(rows)
            left = limit_s - (time.monotonic() - started)
            timeout = max(0.0, min(0.1, left)) if rows else 0.1
            messages = consumer.consume(
                num_messages=max(1, min(settings.consume_max_records, room)), timeout=timeout
            )
            if messages:
                idle_since = time.monotonic()
                if first_at is None:
                    first_at = time.perf_counter()
            elif time.monotonic() - idle_since > 30:
                raise BenchError(f"plain loop idle for 30 s after {written} rows")
            if messages and not rows:
                started = time.monotonic()
            rows += _rows(messages)
            age = time.monotonic() - started
            if rows and (len(rows) >= settings.batch_max_records or age >= limit_s):
                db.begin()
                db.executemany(INSERT_SQL, rows)
                db.commit()
                written += len(rows)
                batches += 1
                rows = []
        done_at = time.perf_counter()
    finally:
        if profiler and profile:
            profiler.disable()
            profiler.dump_stats(profile)
        consumer.close()
        db.close()
        delete_all(bootstrap, [], [group])
    assert first_at is not None  # noqa: S101 - written > 0
    seconds = done_at - first_at
    return SinkRun("plain", records, seconds, records / seconds, batches)


def _verified(run: SinkRun, url: str, records: int) -> SinkRun:
    count, distinct = _count_rows(url)
    if count != records or distinct != records:
        raise BenchError(f"{run.mode}: {count} rows ({distinct} distinct n), expected {records}")
    return run


# -- main ---------------------------------------------------------------------------------------


def _table(kind: str, rows: list[dict[str, Any]]) -> str:
    columns = (
        f"{kind}: plain executemany rec/s",
        f"{kind}: SinkRunner rec/s",
        "ratio",
        "batches (plain / sink)",
    )
    return round_table(
        columns,
        rows,
        lambda row, base, var: (
            f"{base['per_s']:,.0f}",
            f"{var['per_s']:,.0f}",
            f"{row['ratio']:.3f}",
            f"{base['batches']} / {var['batches']}",
        ),
    )


def bench_database(
    kind: str, *, bootstrap: str, records: int, rounds: int, settings: StageSettings,
    workdir: Path, profile: str | None,
) -> dict[str, Any]:  # fmt: skip
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(postgres_server()) if kind == "postgresql" else None
        databases = Databases(kind, workdir, server)
        name = f"bst{uuid.uuid4().hex[:10]}"
        pipeline = Pipeline(name, partitions=PARTITIONS)
        topic = pipeline.topic(f"{name}.in")
        pipeline.sink("probe", inputs=[topic], database="sqlite:///unused.db")(store)
        ensure_topics(pipeline, kafka=KafkaSettings(bootstrap_servers=bootstrap))
        stack.callback(delete_all, bootstrap, [topic], [])
        produce(bootstrap, topic, records)

        if profile:
            out = RESULTS / f"sink_throughput-{kind}-{profile}.prof"
            RESULTS.mkdir(parents=True, exist_ok=True)
            url = databases.fresh()
            contender = run_sink if profile == "sink" else run_plain
            run = contender(bootstrap, topic, records, url, settings, profile=out)
            result = _verified(run, url, records)
            print(asdict(result))
            print_profile(out)
            return {"profile": asdict(result)}

        def one(which: str, index: int) -> dict[str, Any]:
            url = databases.fresh()
            contender = run_sink if which == "variant" else run_plain
            result = _verified(contender(bootstrap, topic, records, url, settings), url, records)
            print(f"  {kind} round {index + 1} {result.mode}: {result.per_s:,.0f} rec/s "
                  f"({result.batches} batches)", flush=True)  # fmt: skip
            return asdict(result)

        rows = alternate(rounds, one)
        for row in rows:
            row["ratio"] = row["variant"]["per_s"] / row["baseline"]["per_s"]
        ratio = median([row["ratio"] for row in rows])
        print(f"\n{kind}: SinkRunner vs plain executemany loop\n")
        print(_table(kind, rows))
        print(f"\nmedian ratio {ratio:.3f} (goal >= 0.80: {'met' if ratio >= 0.8 else 'MISSED'})\n")
        return {"rounds": rows, "median_ratio": ratio, "goal": 0.8}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sink_throughput")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--sink-handler", choices=["add", "execute"], default="add")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], action="append")
    parser.add_argument("--bootstrap", default=KafkaSettings().bootstrap_servers)
    parser.add_argument(
        "--profile",
        choices=["sink", "plain"],
        default=None,
        help="one cProfile'd run of that contender per database instead of the rounds",
    )
    args = parser.parse_args(argv)
    SINK_HANDLER["mode"] = args.sink_handler
    settings = StageSettings()
    payload: dict[str, Any] = {
        "benchmark": "sink_throughput",
        "started_utc": utc_stamp(),
        "records": args.records,
        "rounds": args.rounds,
        "partitions": PARTITIONS,
        "batch_max_records": settings.batch_max_records,
        "batch_max_ms": settings.batch_max_ms,
        "bootstrap": args.bootstrap,
        "cpus": os.cpu_count(),
    }
    workdir = Path(tempfile.mkdtemp(prefix="bench-sink-"))
    try:
        for kind in args.db or ["sqlite", "postgresql"]:
            payload[kind] = bench_database(
                kind,
                bootstrap=args.bootstrap,
                records=args.records,
                rounds=args.rounds,
                settings=settings,
                workdir=workdir,
                profile=args.profile,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    payload["finished_utc"] = utc_stamp()
    if not args.profile:
        print(f"results: {write_json('sink_throughput', payload)}")


if __name__ == "__main__":
    main()
