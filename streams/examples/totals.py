"""Check the ``totals`` stage of the orders pipeline: its window totals against the stored orders.

``verify_totals`` recomputes revenue per customer and window offline, from the ``orders`` table
of the ``store`` sink, leaving out the orders ``orders.totals.dlq`` holds as late, and compares
it with what ``orders.customer_totals`` holds (read_committed). Call it once the pipeline has
drained (no lag on ``orders.totals``)::

    from streams.examples.totals import verify_totals
    report = verify_totals(kafka_config, database="orders.db")   # or database_url=...
    print(report.lines())            # the summary's lines; report.ok is the verdict

A window the stage has not emitted yet is *pending* when it may still be open: its end is
within one window and the grace of the latest order's time (the watermark of its partition
may not have passed it). Every other window must have been emitted once, with the recomputed
count and total.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from streams import codecs
from streams.examples.orders import (
    PRICED_SCHEMA,
    TOTALS,
    TOTALS_GRACE_S,
    TOTALS_WINDOW_S,
    OrderPriced,
    pipeline,
)
from streams.serde import Serde

__all__ = ["TotalsReport", "compare_totals", "verify_totals"]

Window = tuple[str, int]  # (customer, window start in ms)


@dataclass
class TotalsReport:
    """How the emitted window totals compare with the offline recomputation."""

    windows_emitted: int = 0
    windows_matching: int = 0
    mismatched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    pending: int = 0
    duplicates: int = 0
    late_orders: int = 0
    orders_counted: int = 0

    @property
    def ok(self) -> bool:
        return not self.mismatched and not self.missing and not self.duplicates

    def lines(self) -> list[str]:
        verdict = "OK" if self.ok else "FAILED"
        found = [
            (
                f"windows emitted:      {self.windows_emitted} ({self.windows_matching} match "
                f"the recomputation from {self.orders_counted} stored orders)"
            ),
            f"windows still open:   {self.pending}",
            f"late orders (DLQ):    {self.late_orders}",
            f"duplicate windows:    {self.duplicates}",
            f"wrong or missing:     {len(self.mismatched) + len(self.missing)}",
            f"result:               {verdict}",
        ]
        found += [f"  wrong: {line}" for line in self.mismatched[:5]]
        found += [f"  missing: {line}" for line in self.missing[:5]]
        return found


def verify_totals(
    kafka_config: dict[str, Any],
    *,
    database: Path | str | None = None,
    database_url: str | None = None,
    schema_registry_url: str | None = None,
    window_s: float = TOTALS_WINDOW_S,
    grace_s: float = TOTALS_GRACE_S,
) -> TotalsReport:
    """Compare ``orders.customer_totals`` with totals recomputed from the stored orders.

    ``window_s`` and ``grace_s``: the totals stage's, when its workers ran with other
    ``ORDERS_TOTALS_*`` settings than this process.
    """
    late = _late_orders(kafka_config, schema_registry_url)
    serde: Serde[Any] = codecs.json(_totals_model()).build(None)
    emitted = []
    for message in _read(kafka_config, TOTALS):
        value = serde.deserialize(message.value(), topic=TOTALS)
        start = round(value.window_start.timestamp() * 1000)
        emitted.append((value.customer_id, start, [value.orders, value.total_cents]))
    return compare_totals(
        _stored(database, database_url), late, emitted, window_s=window_s, grace_s=grace_s
    )


def compare_totals(
    stored: list[tuple[Any, ...]],
    late: set[str],
    emitted: list[tuple[str, int, list[int]]],
    *,
    window_s: float = TOTALS_WINDOW_S,
    grace_s: float = TOTALS_GRACE_S,
) -> TotalsReport:
    """The comparison itself: ``stored`` rows (order_id, customer_id, total_cents, placed_at),
    the late order ids, the emitted (customer, window start ms, [orders, cents])."""
    size_ms = round(window_s * 1000)
    grace_ms = round(grace_s * 1000)
    expected: dict[Window, list[int]] = {}
    latest = 0
    counted = 0
    for order_id, customer, cents, placed_at in stored:
        at = round(datetime.fromisoformat(str(placed_at)).timestamp() * 1000)
        latest = max(latest, at)
        if order_id in late:
            continue
        counted += 1
        total = expected.setdefault((customer, at - at % size_ms), [0, 0])
        total[0] += 1
        total[1] += int(cents)
    counts = Counter((customer, start) for customer, start, _ in emitted)
    values = {(customer, start): value for customer, start, value in emitted}
    report = TotalsReport(
        windows_emitted=len(counts),
        duplicates=sum(n - 1 for n in counts.values()),
        late_orders=len(late),
        orders_counted=counted,
    )
    for window, value in sorted(values.items()):
        want = expected.get(window)
        if want == value:
            report.windows_matching += 1
        else:
            report.mismatched.append(f"{window}: emitted {value}, recomputed {want}")
    for window in sorted(set(expected) - set(values)):
        if window[1] + 2 * size_ms + grace_ms > latest:
            report.pending += 1  # its partition's watermark may not have passed it yet
        else:
            report.missing.append(f"{window}: {expected[window]}")
    return report


def _totals_model() -> Any:
    from streams.examples.orders import CustomerTotal  # noqa: PLC0415

    return CustomerTotal


def _stored(database: Path | str | None, database_url: str | None) -> list[tuple[Any, ...]]:
    query = "SELECT order_id, customer_id, total_cents, placed_at FROM orders"
    if database is not None:
        with contextlib.closing(sqlite3.connect(database)) as db:
            return list(db.execute(query))
    if database_url is None:
        raise ValueError("give the orders database: database= (SQLite) or database_url=")
    if database_url.startswith("sqlite:///"):
        return _stored(database_url.removeprefix("sqlite:///"), None)
    import psycopg  # noqa: PLC0415 - only for PostgreSQL

    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://")) as db:
        return [tuple(row) for row in db.execute(query)]


def _late_orders(kafka_config: dict[str, Any], registry_url: str | None) -> set[str]:
    """The order ids of the records the totals stage dead-lettered as late."""
    from streams.config import KafkaSettings  # noqa: PLC0415
    from streams.serde.registry import registry_client  # noqa: PLC0415

    url = registry_url or KafkaSettings().schema_registry_url
    registry = registry_client(url)
    try:
        serde: Serde[Any] = codecs.avro(OrderPriced, PRICED_SCHEMA).build(registry)
        spec = pipeline.component("totals")
        assert spec.kind == "aggregate"  # noqa: S101 - declared in streams.examples.orders
        dlq = spec.dlq_topic
        late = set()
        for message in _read(kafka_config, dlq):
            reason = dict(message.headers() or []).get("streams.error.reason")
            if reason == b"late":
                order = serde.deserialize(message.value(), topic=dlq)
                late.add(order.order_id)
        return late
    finally:
        registry.close()


def _read(kafka_config: dict[str, Any], topic: str) -> list[Any]:
    consumer = Consumer(
        {
            **kafka_config,
            "group.id": f"verify-totals-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        partitions = len(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        found: list[Any] = []
        done: set[int] = set()
        idle = 0
        while len(done) < partitions and idle < 20:  # noqa: PLR2004 - 10 s without a record
            batch = consumer.consume(1000, timeout=0.5)
            idle = 0 if batch else idle + 1
            for message in batch:
                error = message.error()
                if error is None:
                    found.append(message)
                elif error.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
                    done.add(message.partition() or 0)
        return found
    finally:
        consumer.close()
