"""The reference orders pipeline: every principle of the framework at work, ready to copy.

::

    orders.raw (JSON)  --validate-->  orders.placed (Avro OrderPlaced)
                        invalid -> orders.validate.dlq (reason "deserialization" or "dead-letter")
    orders.placed      --enrich-->    orders.priced (Avro OrderPriced)
                        calls the pricing service through a Dependency (timeout, breaker);
                        an outage parks records in orders.enrich.retry.{2s,10s,30s}
    orders.priced      --store-->     a SQL table, rows and offsets in one DB transaction
                        (SQLite by default; PostgreSQL with STREAMS_SINK_DATABASE_URL)
    orders.priced      --totals-->    orders.customer_totals (JSON CustomerTotal)
                        revenue per customer in tumbling windows of event time (placed_at),
                        re-keyed by customer through orders.totals.repartition; state in
                        orders.totals.changelog; orders later than the grace go to
                        orders.totals.dlq (reason "late"). streams.examples.totals checks it.

Environment: ``PRICING_URL`` (default http://127.0.0.1:18090), ``ORDERS_DATABASE_URL`` (the
sink's default database; ``STREAMS_SINK_DATABASE_URL`` overrides it as for every sink),
``ORDERS_TOTALS_WINDOW_S`` and ``ORDERS_TOTALS_GRACE_S`` (the totals' window, default 60 s,
and grace, default 10 s: a demo of a minute uses shorter ones so that windows close in it),
``ORDERS_ENRICH_MAX_ATTEMPTS`` (enrich's attempts before the DLQ, default 8).
"""

from __future__ import annotations

import http.client
import json
import os
import threading
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from streams import DeadLetter, Dependency, Pipeline, Record, RetryPolicy, SinkTransaction, codecs
from streams.windows import Tumbling, Window

RAW = "orders.raw"
PLACED = "orders.placed"
PRICED = "orders.priced"
TOTALS = "orders.customer_totals"
TOTALS_WINDOW_S = float(os.environ.get("ORDERS_TOTALS_WINDOW_S", "60"))
TOTALS_GRACE_S = float(os.environ.get("ORDERS_TOTALS_GRACE_S", "10"))
ENRICH_MAX_ATTEMPTS = int(os.environ.get("ORDERS_ENRICH_MAX_ATTEMPTS", "8"))
PLACED_SCHEMA = "orders/order_placed.v1.avsc"
PRICED_SCHEMA = "orders/order_priced.v1.avsc"
MAX_QUANTITY = 100
_SERVER_ERROR = 500


class RawOrder(BaseModel):
    """An order as the shop front sends it; pydantic rejects what is malformed."""

    order_id: str = Field(min_length=1, max_length=64)
    customer_id: str = Field(min_length=1, max_length=64)
    sku: str = Field(pattern=r"^sku-[0-9]{2,6}$")
    quantity: int = Field(gt=0)
    placed_at: datetime


class OrderPlaced(BaseModel):
    """Bound to schemas/orders/order_placed.v1.avsc."""

    order_id: str
    customer_id: str
    sku: str
    quantity: int
    unit_price_cents: int
    placed_at: datetime


class OrderPriced(BaseModel):
    """Bound to schemas/orders/order_priced.v1.avsc."""

    order_id: str
    customer_id: str
    sku: str
    quantity: int
    unit_price_cents: int
    total_cents: int
    placed_at: datetime
    priced_at: datetime


pricing = Dependency(
    "pricing",
    timeout_s=1.0,
    failure_threshold=5,
    # a down service is probed again every 3 s; records in the meantime go to the retry topics
    open_for_s=3.0,
    max_concurrency=8,
)


class _PricingClient:
    """Keep-alive HTTP to the pricing service, one connection per thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            url = os.environ.get("PRICING_URL", "http://127.0.0.1:18090").removeprefix("http://")
            host, _, port = url.partition(":")
            connection = http.client.HTTPConnection(host, int(port or 80), timeout=1.0)
            self._local.connection = connection
        return connection

    def price(self, sku: str, quantity: int, idempotency_key: str) -> dict[str, int]:
        connection = self._connection()
        try:
            connection.request(
                "GET",
                f"/price?sku={sku}&quantity={quantity}",
                headers={"Idempotency-Key": idempotency_key},
            )
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            self._local.connection = None
            raise ConnectionError(f"pricing: {error}") from error
        if response.status >= _SERVER_ERROR:
            raise ConnectionError(f"pricing answered {response.status}")
        data: dict[str, int] = json.loads(body)
        return data


_client = _PricingClient()

pipeline = Pipeline("orders", partitions=4)


@pipeline.stage(
    "validate",
    inputs=[RAW],
    input=codecs.json(RawOrder),  # malformed JSON or fields: DLQ, reason "deserialization"
    outputs={PLACED: codecs.avro(OrderPlaced, PLACED_SCHEMA)},
)
def validate(record: Record[RawOrder]) -> OrderPlaced:
    order = record.value
    if order.quantity > MAX_QUANTITY:
        raise DeadLetter(f"quantity {order.quantity} is over the limit of {MAX_QUANTITY}")
    return OrderPlaced(
        order_id=order.order_id,
        customer_id=order.customer_id,
        sku=order.sku,
        quantity=order.quantity,
        unit_price_cents=0,  # priced by the next stage
        placed_at=order.placed_at,
    )


@pipeline.stage(
    "enrich",
    inputs=[PLACED],
    input=codecs.avro(OrderPlaced, PLACED_SCHEMA),
    outputs={PRICED: codecs.avro(OrderPriced, PRICED_SCHEMA)},
    # 8 attempts outlast a pricing outage of a minute or so: 2 + 10 + 30 * 5 s of waiting at
    # the least (the demo gives 3, so that its outage dead-letters some orders to redrive)
    retry=RetryPolicy(tiers=(2.0, 10.0, 30.0), max_attempts=ENRICH_MAX_ATTEMPTS, jitter=0.2),
)
def enrich(record: Record[OrderPlaced]) -> OrderPriced:
    order = record.value
    price = pricing.call_sync(_client.price, order.sku, order.quantity, record.idempotency_key)
    return OrderPriced(
        order_id=order.order_id,
        customer_id=order.customer_id,
        sku=order.sku,
        quantity=order.quantity,
        unit_price_cents=price["unit_price_cents"],
        total_cents=price["total_cents"],
        placed_at=order.placed_at,
        priced_at=datetime.now(UTC),
    )


ORDERS_TABLE = """CREATE TABLE IF NOT EXISTS orders (
    origin TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    sku TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    total_cents BIGINT NOT NULL,
    placed_at TEXT NOT NULL,
    priced_at TEXT NOT NULL
)"""


@pipeline.sink(
    "store",
    inputs=[PRICED],
    input=codecs.avro(OrderPriced, PRICED_SCHEMA),
    database=os.environ.get("ORDERS_DATABASE_URL", "sqlite:///orders.db"),
    setup_sql=[ORDERS_TABLE],
)
def store(record: Record[OrderPriced], tx: SinkTransaction) -> None:
    order = record.value
    tx.execute(
        "INSERT INTO orders (origin, order_id, customer_id, sku, quantity, total_cents,"
        " placed_at, priced_at) VALUES (:origin, :order_id, :customer_id, :sku, :quantity,"
        " :total_cents, :placed_at, :priced_at) ON CONFLICT DO NOTHING",
        {
            "origin": record.idempotency_key,
            "order_id": order.order_id,
            "customer_id": order.customer_id,
            "sku": order.sku,
            "quantity": order.quantity,
            "total_cents": order.total_cents,
            "placed_at": order.placed_at.isoformat(),
            "priced_at": order.priced_at.isoformat(),
        },
    )


class CustomerTotal(BaseModel):
    """One customer's revenue in one window of ``placed_at`` (``orders.customer_totals``)."""

    customer_id: str
    window_start: datetime
    window_end: datetime
    orders: int
    total_cents: int


def _customer_total(customer_id: str, window: Window, value: list[int]) -> CustomerTotal:
    return CustomerTotal(
        customer_id=customer_id,
        window_start=datetime.fromtimestamp(window.start_ms / 1000, UTC),
        window_end=datetime.fromtimestamp(window.end_ms / 1000, UTC),
        orders=value[0],
        total_cents=value[1],
    )


@pipeline.aggregate(
    "totals",
    inputs=[PRICED],
    input=codecs.avro(OrderPriced, PRICED_SCHEMA),
    outputs={TOTALS: codecs.json(CustomerTotal)},
    # orders.priced is keyed by order: regroup by customer (through orders.totals.repartition)
    key=lambda record: record.value.customer_id,
    window=Tumbling(TOTALS_WINDOW_S, grace_s=TOTALS_GRACE_S),
    event_time=lambda order: order.placed_at,
    initial=lambda: [0, 0],  # [orders, total_cents]
    result=_customer_total,
)
def totals(value: list[int], record: Record[OrderPriced]) -> list[int]:
    return [value[0] + 1, value[1] + record.value.total_cents]
