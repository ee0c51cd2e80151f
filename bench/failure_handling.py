"""Failure handling cost: 1 % of records failing once, and upstream while a dependency is down.

Two comparisons, each run in alternating rounds (baseline and variant, order swapped every
round) so that the noise of a shared machine and broker hits both alike:

(a) ``one-percent``: a one-stage copy pipeline (``StageRunner`` in this process, raw bytes,
    4 partitions) whose handler raises ``RetryLater`` on the first attempt of 1 % of the
    records (chosen by a hash of the value), against the same pipeline without failures (whose
    handler evaluates the same test on every record but never raises).
    Throughput = N / time from the first record consumed until the group's committed offsets
    on the main input reach its end. The time until every record, retried ones included, is
    in the output is reported separately.
(b) ``outage``: two stages in two worker processes (``python -m streams.runtime.worker``):
    ``ingest`` copies, ``enrich`` calls a real HTTP pricing service through a ``Dependency``.
    Ingest throughput (N / time until its committed offsets on the input reach the end) with
    the service up against the service down (connections refused: enrich parks records in its
    60 s retry tier, so none come back during the measurement).

Every run uses fresh topics (uuid names), created with ``ensure_topics`` and deleted after,
and checks the counts in the output, retry and dead-letter topics; a wrong count fails loudly.

    python -m bench.failure_handling [--records N] [--rounds R] [--only one-percent|outage]

This module also defines the module-level ``pipeline`` the outage workers run, configured by
the BENCH_FH_* environment variables.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams import headers
from streams.codecs import raw
from streams.config import KafkaSettings, StageSettings
from streams.dependency import Dependency
from streams.examples.pricing_service import fetch_total
from streams.exceptions import RetryLater
from streams.kafka.messages import message_headers
from streams.pipeline import Pipeline
from streams.record import Output, Record
from streams.retry import RetryPolicy
from streams.stage import StageRunner
from streams.stage.batch import TransactionBatch
from streams.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PARTITIONS = 4
VALUE_PAD = 90  # values are 100 bytes: 10 digits of the record number and padding
# (a) with a retry tier longer than this ends when the main input is committed: a diagnostic
# that separates writing records to the retry topic from reading them back
WAIT_FOR_RETRIES_S = 10.0


class BenchError(RuntimeError):
    """A run produced wrong counts or did not finish: the numbers would mean nothing."""


# -- Kafka helpers (shared with bench.sink_throughput) -----------------------------------------


def kafka_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    return {**KafkaSettings(bootstrap_servers=bootstrap).client_config(), **extra}


def value_of(n: int) -> bytes:
    return f"{n:010d}".encode() + b"." * VALUE_PAD


def produce(bootstrap: str, topic: str, count: int, *, keys: int = 64) -> None:
    """Values ``value_of(0..count-1)``, keys over ``keys`` distinct strings, idempotent."""
    producer = Producer(kafka_config(bootstrap, **{"enable.idempotence": True, "linger.ms": 20}))
    for n in range(count):
        while True:
            try:
                producer.produce(topic, value_of(n), key=f"k{n % keys}".encode())
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60) != 0:
        raise BenchError(f"could not write {count} records to {topic}")


def end_offsets(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> dict[int, int]:
    consumer = Consumer(kafka_config(bootstrap, **{"group.id": f"bench-hw-{uuid.uuid4().hex}"}))
    try:
        return {
            p: int(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
            for p in range(partitions)
        }
    finally:
        consumer.close()


class CommittedProbe:
    """Reads a group's committed offsets on one topic (one consumer, reused across polls)."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        self._consumer = Consumer(kafka_config(bootstrap, **{"group.id": group}))
        self._partitions = [TopicPartition(topic, p) for p in range(partitions)]

    def by_partition(self) -> dict[int, int]:
        found = self._consumer.committed(self._partitions, timeout=10)
        return {tp.partition: max(tp.offset, 0) for tp in found}

    def total(self) -> int:
        return sum(self.by_partition().values())

    def close(self) -> None:
        self._consumer.close()


def committed_total(bootstrap: str, group: str, topic: str, partitions: int = PARTITIONS) -> int:
    probe = CommittedProbe(bootstrap, group, topic, partitions)
    try:
        return probe.total()
    finally:
        probe.close()


def read_all(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> list[Message]:
    """Every committed record of ``topic`` (read_committed), up to the last stable offset."""
    consumer = Consumer(
        kafka_config(
            bootstrap,
            **{
                "group.id": f"bench-verify-{uuid.uuid4().hex}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            },
        )
    )
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        found: list[Message] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + 120
        while len(at_end) < partitions:
            if time.monotonic() > deadline:
                raise BenchError(f"reading {topic} back did not reach its end within 120 s")
            for message in consumer.consume(1000, timeout=0.5):
                error = message.error()
                if error is None:
                    found.append(message)
                    at_end.discard(message.partition() or 0)
                elif error.code() == -191:  # _PARTITION_EOF
                    at_end.add(message.partition() or 0)
                else:
                    raise BenchError(f"reading {topic}: {error.str()}")
        return found
    finally:
        consumer.close()


def delete_all(bootstrap: str, topics: Sequence[str], groups: Sequence[str]) -> None:
    """Delete the run's topics and consumer groups (best effort: a leftover only costs disk)."""
    admin = AdminClient(kafka_config(bootstrap))
    if groups:
        for future in admin.delete_consumer_groups(list(groups), request_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result()
    if topics:
        for future in admin.delete_topics(list(topics), operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result()


def utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{utc_stamp()}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def alternate(rounds: int, run: Callable[[str, int], dict[str, Any]]) -> list[dict[str, Any]]:
    """Baseline and variant in every round; the order is swapped each round."""
    rows: list[dict[str, Any]] = []
    for index in range(rounds):
        order = ("baseline", "variant") if index % 2 == 0 else ("variant", "baseline")
        results = {which: run(which, index) for which in order}
        rows.append({"round": index + 1, "order": list(order), **results})
    return rows


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


# -- (a) one stage, 1 % of records failing once -------------------------------------------------


def fails_first_time(value: bytes) -> bool:
    return zlib.crc32(value) % 100 == 0


class TimedStageRunner(StageRunner):
    """A StageRunner that notes when the first record arrived and when what was committed."""

    def __init__(self, *args: Any, main_topic: str, main_end: int, outputs: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.main_topic = main_topic
        self.main_end = main_end
        self.expected_outputs = outputs
        self.first_at: float | None = None
        self.main_done_at: float | None = None
        self.all_done_at: float | None = None
        self._main_committed: dict[int, int] = {}

    def _batch(self, *args: Any) -> TransactionBatch:
        batch = super()._batch(*args)
        process, maybe_commit = batch.process, batch.maybe_commit

        def timed_process(messages: list[Message]) -> None:
            if messages and self.first_at is None:
                self.first_at = time.perf_counter()
            process(messages)

        def timed_commit(*, force: bool) -> None:
            maybe_commit(force=force)
            now = time.perf_counter()
            for (topic, partition), offset in batch.committed.items():
                if topic == self.main_topic:
                    seen = self._main_committed.get(partition, 0)
                    self._main_committed[partition] = max(seen, offset)
            if self.main_done_at is None and sum(self._main_committed.values()) >= self.main_end:
                self.main_done_at = now
            if self.all_done_at is None and self.stats.produced >= self.expected_outputs:
                self.all_done_at = now
                self.request_stop()

        batch.process = timed_process  # type: ignore[method-assign]
        batch.maybe_commit = timed_commit  # type: ignore[method-assign]
        return batch


@dataclass
class CopyRun:
    records: int
    failing: int
    main_s: float
    all_s: float
    main_per_s: float
    stats: dict[str, Any] = field(default_factory=dict)


def run_copy(
    bootstrap: str,
    records: int,
    *,
    failing: bool,
    tier_s: float = 1.0,
    profile: Path | None = None,
    key_ordered: bool = False,
    keys: int = 64,
) -> CopyRun:
    """One run of (a): fresh topics, N records, one in-process StageRunner, verified counts."""
    tag = uuid.uuid4().hex[:10]
    name = f"bfh{tag}"
    source, sink = f"{name}.in", f"{name}.out"

    def copy(record: Record[bytes]) -> bytes:
        # both sides evaluate the same test on every record, so that the ratio measures what
        # failing costs, not the test; only the variant acts on it
        first_attempt_fails = record.header(headers.ATTEMPT) is None and fails_first_time(
            record.value
        )
        if failing and first_attempt_fails:
            raise RetryLater("fails on its first attempt (benchmark)")
        return record.value

    pipeline = Pipeline(name, partitions=PARTITIONS)
    spec = pipeline.add_stage(
        "copy",
        copy,
        inputs=[source],
        outputs={sink: raw()},
        retry=RetryPolicy(tiers=(tier_s,), max_attempts=2, jitter=0.1, key_ordered=key_ordered),
    )
    topics = [t.name for t in pipeline.topic_specs()]
    ensure_topics(pipeline, kafka=KafkaSettings(bootstrap_servers=bootstrap))
    try:
        produce(bootstrap, source, records, keys=keys)
        expected_failing = (
            sum(fails_first_time(value_of(n)) for n in range(records)) if failing else 0
        )
        runner = TimedStageRunner(
            spec,
            kafka=KafkaSettings(bootstrap_servers=bootstrap),
            settings=StageSettings(),
            main_topic=source,
            main_end=records,
            # a tier longer than the run: stop when the main input is done (diagnostic)
            outputs=records if tier_s <= WAIT_FOR_RETRIES_S else records - expected_failing,
        )
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        runner.run(idle_timeout_s=30)
        if profiler and profile:
            profiler.disable()
            profiler.dump_stats(profile)
        if runner.first_at is None or runner.main_done_at is None or runner.all_done_at is None:
            stats = runner.stats.snapshot(group=runner.spec.group_id, slot=0)
            raise BenchError(f"copy run did not finish: {stats}")
        waited = tier_s <= WAIT_FOR_RETRIES_S or not failing
        _verify_copy(bootstrap, spec.group_id, source, sink, spec.retry_topics[0], spec.dlq_topic,
                     records, expected_failing, all_out=waited,
                     parked=runner.stats.parked)  # fmt: skip
        main_s = runner.main_done_at - runner.first_at
        return CopyRun(
            records=records,
            failing=expected_failing,
            main_s=main_s,
            all_s=runner.all_done_at - runner.first_at,
            main_per_s=records / main_s,
            stats=runner.stats.snapshot(group=runner.spec.group_id, slot=0),
        )
    finally:
        delete_all(bootstrap, topics, [spec.group_id])


def _verify_copy(  # noqa: PLR0917 - a private helper with one caller
    bootstrap: str,
    group: str,
    source: str,
    sink: str,
    retry_topic: str,
    dlq: str,
    records: int,
    failing: int,
    *,
    all_out: bool = True,
    parked: int = 0,
) -> None:
    committed = committed_total(bootstrap, group, source)
    if committed != records:
        raise BenchError(f"{group}: committed {committed} on {source}, expected {records}")
    values = [m.value() for m in read_all(bootstrap, sink)]
    expected = {value_of(n) for n in range(records)}
    if not all_out:
        expected = {value for value in expected if not fails_first_time(value)}
    if len(values) != len(expected) or set(values) != expected:
        raise BenchError(
            f"{sink}: {len(values)} records ({len(set(values))} distinct), expected {len(expected)}"
        )
    retried = read_all(bootstrap, retry_topic)
    # key-ordered runs also park later records of a waiting key there (header parked.behind)
    failed = [m for m in retried if headers.get(message_headers(m), headers.PARKED_BEHIND) is None]
    if (
        len(failed) != failing
        or len(retried) - len(failed) != parked
        or any(not fails_first_time(m.value() or b"") for m in failed)
    ):
        raise BenchError(
            f"{retry_topic}: {len(failed)} failed + {len(retried) - len(failed)} parked records, "
            f"expected {failing} + {parked}"
        )
    dead = read_all(bootstrap, dlq)
    if dead:
        raise BenchError(f"{dlq}: {len(dead)} records, expected none")


# -- (b) ingest while enrich's dependency is down -----------------------------------------------

pricing = Dependency("bench-pricing", timeout_s=1.0, failure_threshold=3, open_for_s=5.0)
_first_mark: dict[str, bool] = {}


def ingest(record: Record[bytes]) -> bytes:
    if not _first_mark:
        _first_mark["done"] = True
        mark = os.environ.get("BENCH_FH_MARK")
        if mark:
            Path(mark).write_text(repr(time.time()))
    return record.value


def enrich(record: Record[bytes]) -> Output:
    url = f"{os.environ['PRICING_URL']}/price?sku=sku-{int(record.value[:10]) % 7}&quantity=2"
    total = pricing.call_sync(fetch_total, url, record.idempotency_key)
    return Output(record.value + b":" + str(total).encode())


OUTAGE_RETRY = RetryPolicy(tiers=(60.0, 300.0), max_attempts=3, jitter=0.1)


def build_outage(name: str, source: str, mid: str, sink: str) -> Pipeline:
    built = Pipeline(name, partitions=PARTITIONS)
    built.add_stage("ingest", ingest, inputs=[source], outputs={mid: raw()})
    built.add_stage("enrich", enrich, inputs=[mid], outputs={sink: raw()}, retry=OUTAGE_RETRY)
    return built


pipeline = build_outage(
    os.environ.get("BENCH_FH_PIPELINE", "bfhoutage"),
    os.environ.get("BENCH_FH_INPUT", "bfhoutage.in"),
    os.environ.get("BENCH_FH_MID", "bfhoutage.mid"),
    os.environ.get("BENCH_FH_OUTPUT", "bfhoutage.out"),
)


@dataclass
class OutageRun:
    records: int
    service: str
    ingest_s: float
    ingest_per_s: float
    enrich_committed_at_ingest_end: int
    enrich_committed: int
    enrich_output: int
    enrich_parked: int
    service_requests: int


@contextlib.contextmanager
def _workers(env: dict[str, str], log: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    worker = [sys.executable, "-m", "streams.runtime.worker", "bench.failure_handling:pipeline"]
    with log.open("wb") as out:
        procs = [
            subprocess.Popen(
                [*worker, "--stage", stage], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
            for stage in ("ingest", "enrich")
        ]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_outage(bootstrap: str, records: int, *, down: bool, workdir: Path) -> OutageRun:
    from streams.examples.pricing_service import PricingService  # noqa: PLC0415

    tag = uuid.uuid4().hex[:10]
    name = f"bfo{tag}"
    source, mid, sink = f"{name}.in", f"{name}.mid", f"{name}.out"
    built = build_outage(name, source, mid, sink)
    ingest_spec, enrich_spec = built.get("ingest"), built.get("enrich")
    topics = [t.name for t in built.topic_specs()]
    groups = [ingest_spec.group_id, enrich_spec.group_id]
    ensure_topics(built, kafka=KafkaSettings(bootstrap_servers=bootstrap))
    service = PricingService().start()
    mark = workdir / f"{name}.first"
    log = workdir / f"{name}.log"
    try:
        produce(bootstrap, source, records)
        if down:
            service.set_mode("down")
        env = {
            **os.environ,
            "BENCH_FH_PIPELINE": name,
            "BENCH_FH_INPUT": source,
            "BENCH_FH_MID": mid,
            "BENCH_FH_OUTPUT": sink,
            "BENCH_FH_MARK": str(mark),
            "PRICING_URL": service.url,
            "STREAMS_BOOTSTRAP_SERVERS": bootstrap,
            "STREAMS_LOG_LEVEL": "WARNING",
        }
        ingest_probe = CommittedProbe(bootstrap, ingest_spec.group_id, source, PARTITIONS)
        enrich_probe = CommittedProbe(bootstrap, enrich_spec.group_id, mid, PARTITIONS)
        try:
            with _workers(env, log) as procs:
                deadline = time.monotonic() + 300
                while ingest_probe.total() < records:
                    if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                        tail = log.read_text(errors="replace")[-3000:]
                        raise BenchError(f"ingest did not finish (outage run {name}):\n{tail}")
                    time.sleep(0.02)
                ended = time.time()
                enrich_then = enrich_probe.total()
            # the workers stopped on SIGTERM and committed their last batch
            codes = [p.returncode for p in procs]
            if codes != [0, 0]:
                tail = log.read_text(errors="replace")[-3000:]
                raise BenchError(f"workers exited with {codes}:\n{tail}")
            enrich_offsets = enrich_probe.by_partition()
        finally:
            ingest_probe.close()
            enrich_probe.close()
        started = float(mark.read_text())
        requests = int(service.stats()["requests"])
        output, parked = _verify_outage(
            bootstrap, records, mid, sink, enrich_spec.retry_topics, enrich_spec.dlq_topic,
            enrich_offsets, down=down, requests=requests,
        )  # fmt: skip
        ingest_s = ended - started
        return OutageRun(
            records=records,
            service="down" if down else "up",
            ingest_s=ingest_s,
            ingest_per_s=records / ingest_s,
            enrich_committed_at_ingest_end=enrich_then,
            enrich_committed=output + parked,
            enrich_output=output,
            enrich_parked=parked,
            service_requests=requests,
        )
    finally:
        service.stop()
        delete_all(bootstrap, topics, groups)


def _verify_outage(  # noqa: PLR0917 - a private helper with one caller
    bootstrap: str,
    records: int,
    mid: str,
    sink: str,
    retry_topics: Sequence[str],
    dlq: str,
    enrich_offsets: dict[int, int],
    *,
    down: bool,
    requests: int,
) -> tuple[int, int]:
    """Mid holds every input once; what enrich committed is in its output or first retry tier."""
    messages = read_all(bootstrap, mid)
    mids = {m.value() for m in messages}
    if len(messages) != records or len(mids) != records:
        raise BenchError(f"{mid}: {len(messages)} records ({len(mids)} distinct), want {records}")
    # offsets count transaction markers too: count the records below the committed offsets
    enrich_committed = sum(
        1 for m in messages if (m.offset() or 0) < enrich_offsets.get(m.partition() or 0, 0)
    )
    if enrich_committed == 0:
        raise BenchError("enrich processed nothing while ingest ran: the comparison is void")
    output = len(read_all(bootstrap, sink))
    parked = len(read_all(bootstrap, retry_topics[0]))
    later = sum(len(read_all(bootstrap, topic)) for topic in retry_topics[1:])
    dead = len(read_all(bootstrap, dlq))
    if later or dead or output + parked != enrich_committed:
        raise BenchError(
            f"enrich committed {enrich_committed} records but output={output} parked={parked} "
            f"later tiers={later} dlq={dead}"
        )
    if down and (output or requests):
        raise BenchError(f"service down, yet output={output} and {requests} requests reached it")
    if not down and output == 0:
        raise BenchError("service up, yet enrich wrote no output")
    return output, parked


# -- main -----------------------------------------------------------------------------------


def round_table(
    columns: Sequence[str],
    rows: list[dict[str, Any]],
    cells: Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], Sequence[str]],
) -> str:
    """A Markdown table with a line per round: ``round``, then ``columns`` (right-aligned).

    ``cells(row, baseline, variant)`` gives one round's values, in the order of ``columns``.
    """
    lines = ["| round | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for row in rows:
        values = cells(row, row["baseline"], row["variant"])
        lines.append(f"| {row['round']} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def _copy_table(rows: list[dict[str, Any]]) -> str:
    columns = (
        "no failures: rec/s",
        "1 % failing once: rec/s (main flow)",
        "ratio",
        "failing: all outputs in (s)",
        "no failures: all outputs in (s)",
    )
    return round_table(
        columns,
        rows,
        lambda row, base, var: (
            f"{base['main_per_s']:,.0f}",
            f"{var['main_per_s']:,.0f}",
            f"{row['ratio']:.3f}",
            f"{var['all_s']:.2f}",
            f"{base['all_s']:.2f}",
        ),
    )


def _key_ordered_table(rows: list[dict[str, Any]]) -> str:
    columns = (
        "plain retries: rec/s (main flow)",
        "key-ordered: rec/s (main flow)",
        "ratio",
        "records parked",
        "all outputs in, plain / key-ordered (s)",
    )
    return round_table(
        columns,
        rows,
        lambda row, base, var: (
            f"{base['main_per_s']:,.0f}",
            f"{var['main_per_s']:,.0f}",
            f"{row['ratio']:.3f}",
            f"{var['stats'].get('parked', 0):,}",
            f"{base['all_s']:.2f} / {var['all_s']:.2f}",
        ),
    )


def _outage_table(rows: list[dict[str, Any]]) -> str:
    columns = (
        "service up: ingest rec/s",
        "service down: ingest rec/s",
        "ratio",
        "enrich done during ingest (up / down)",
    )
    return round_table(
        columns,
        rows,
        lambda row, base, var: (
            f"{base['ingest_per_s']:,.0f}",
            f"{var['ingest_per_s']:,.0f}",
            f"{row['ratio']:.3f}",
            (
                f"{base['enrich_committed_at_ingest_end']:,} / "
                f"{var['enrich_committed_at_ingest_end']:,}"
            ),
        ),
    )


def _print_profile(path: Path, limit: int = 25) -> None:
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)


def _bench_key_ordered(args: argparse.Namespace, payload: dict[str, Any]) -> None:
    """(c): key-ordered against plain retries, both with 1 % of records failing once."""

    def three(which: str, index: int) -> dict[str, Any]:
        result = run_copy(
            args.bootstrap,
            args.records,
            failing=True,
            tier_s=args.tier,
            key_ordered=which == "variant",
            keys=args.keys,
        )
        print(f"  (c) round {index + 1} {which}: {result.main_per_s:,.0f} rec/s main flow, "
              f"all in {result.all_s:.2f} s, parked {result.stats.get('parked', 0):,}",
              flush=True)  # fmt: skip
        return asdict(result)

    rows = alternate(args.rounds, three)
    for row in rows:
        row["ratio"] = row["variant"]["main_per_s"] / row["baseline"]["main_per_s"]
    ratio = median([row["ratio"] for row in rows])
    payload["key_ordered"] = {
        "rounds": rows,
        "median_ratio": ratio,
        "keys": args.keys,
        "tier_s": args.tier,
    }
    print(f"\n(c) 1 % failing once, key-ordered vs plain retries, {args.keys:,} keys\n")
    print(_key_ordered_table(rows))
    print(f"\nmedian ratio {ratio:.3f} (main flow, key-ordered / plain)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.failure_handling")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["one-percent", "outage", "key-ordered"], default=None)
    parser.add_argument(
        "--keys", type=int, default=10_000, help="(c) distinct keys of the input (default 10,000)"
    )
    parser.add_argument("--bootstrap", default=KafkaSettings().bootstrap_servers)
    parser.add_argument(
        "--profile",
        choices=["baseline", "variant"],
        default=None,
        help="(a) only: one cProfile'd run of that side instead of the rounds",
    )
    parser.add_argument(
        "--tier",
        type=float,
        default=1.0,
        help="(a) retry tier in s (default 1); over 10 s the retried records are not waited for",
    )
    args = parser.parse_args(argv)
    payload: dict[str, Any] = {
        "benchmark": "failure_handling",
        "started_utc": utc_stamp(),
        "records": args.records,
        "rounds": args.rounds,
        "partitions": PARTITIONS,
        "bootstrap": args.bootstrap,
        "cpus": os.cpu_count(),
    }
    if args.profile:
        out = RESULTS / f"failure_handling-{args.profile}.prof"
        RESULTS.mkdir(parents=True, exist_ok=True)
        result = run_copy(
            args.bootstrap,
            args.records,
            failing=args.profile == "variant",
            tier_s=args.tier,
            profile=out,
        )
        print(asdict(result))
        _print_profile(out)
        return

    if args.only in {None, "one-percent"}:

        def one(which: str, index: int) -> dict[str, Any]:
            result = run_copy(
                args.bootstrap, args.records, failing=which == "variant", tier_s=args.tier
            )
            print(f"  (a) round {index + 1} {which}: {result.main_per_s:,.0f} rec/s main flow, "
                  f"all in {result.all_s:.2f} s", flush=True)  # fmt: skip
            return asdict(result)

        rows = alternate(args.rounds, one)
        for row in rows:
            row["ratio"] = row["variant"]["main_per_s"] / row["baseline"]["main_per_s"]
        ratio = median([row["ratio"] for row in rows])
        payload["one_percent"] = {
            "rounds": rows,
            "median_ratio": ratio,
            "goal": 0.9,
            "tier_s": args.tier,
        }
        print(f"\n(a) 1 % of records failing once (retry tier {args.tier:g} s), main flow\n")
        print(_copy_table(rows))
        print(f"\nmedian ratio {ratio:.3f} (goal >= 0.90: {'met' if ratio >= 0.9 else 'MISSED'})")

    if args.only == "key-ordered":
        _bench_key_ordered(args, payload)

    if args.only in {None, "outage"}:
        workdir = Path(tempfile.mkdtemp(prefix="bench-fh-"))

        def two(which: str, index: int) -> dict[str, Any]:
            result = run_outage(
                args.bootstrap, args.records, down=which == "variant", workdir=workdir
            )
            print(f"  (b) round {index + 1} service {result.service}: "
                  f"{result.ingest_per_s:,.0f} rec/s ingest", flush=True)  # fmt: skip
            return asdict(result)

        rows = alternate(args.rounds, two)
        for row in rows:
            row["ratio"] = row["variant"]["ingest_per_s"] / row["baseline"]["ingest_per_s"]
        ratio = median([row["ratio"] for row in rows])
        payload["outage"] = {"rounds": rows, "median_ratio": ratio, "goal": 0.95}
        print("\n(b) upstream stage while the downstream dependency is down\n")
        print(_outage_table(rows))
        print(f"\nmedian ratio {ratio:.3f} (goal >= 0.95: {'met' if ratio >= 0.95 else 'MISSED'})")

    payload["finished_utc"] = utc_stamp()
    print(f"\nresults: {write_json('failure_handling', payload)}")


if __name__ == "__main__":
    main()
