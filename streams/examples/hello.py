"""A two-stage orders pipeline: JSON in, Avro in the middle (on the schema registry), JSON out.

    validate:  hello.orders.raw (JSON RawOrder)  ->  hello.orders.placed (Avro OrderPlaced)
    price:     hello.orders.placed (Avro)        ->  hello.orders.priced (JSON PricedOrder)

Run it:  streams topics create streams.examples.hello:pipeline
         streams run streams.examples.hello:pipeline --all --workers 2
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from streams import Pipeline, Record, codecs

RAW = "hello.orders.raw"
PLACED = "hello.orders.placed"
PRICED = "hello.orders.priced"


class RawOrder(BaseModel):
    """An order as the shop front sends it."""

    order_id: str
    customer_id: str
    sku: str
    quantity: int = Field(gt=0)
    unit_price_cents: int = Field(ge=0)
    placed_at: datetime


class OrderPlaced(BaseModel):
    """Bound to schemas/orders/order_placed.v1.avsc (checked at start-up)."""

    order_id: str
    customer_id: str
    sku: str
    quantity: int
    unit_price_cents: int
    placed_at: datetime


class PricedOrder(BaseModel):
    order_id: str
    customer_id: str
    total_cents: int
    placed_at: datetime
    priced_at: datetime


pipeline = Pipeline("hello", partitions=4)


@pipeline.stage(
    "validate",
    inputs=[RAW],
    input=codecs.json(RawOrder),
    outputs={PLACED: codecs.avro(OrderPlaced, "orders/order_placed.v1.avsc")},
)
def validate(record: Record[RawOrder]) -> OrderPlaced:
    return OrderPlaced(**record.value.model_dump())


@pipeline.stage(
    "price",
    inputs=[PLACED],
    input=codecs.avro(OrderPlaced, "orders/order_placed.v1.avsc"),
    outputs={PRICED: codecs.json(PricedOrder)},
)
def price(record: Record[OrderPlaced]) -> PricedOrder:
    order = record.value
    return PricedOrder(
        order_id=order.order_id,
        customer_id=order.customer_id,
        total_cents=order.quantity * order.unit_price_cents,
        placed_at=order.placed_at,
        priced_at=datetime.now(UTC),
    )
