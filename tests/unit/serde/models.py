"""Pydantic models that match tests/unit/serde_schemas/orders/order_placed.v1/v2.avsc."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel

SCHEMAS = Path(__file__).resolve().parents[1] / "serde_schemas"
ORDER_V1 = SCHEMAS / "orders" / "order_placed.v1.avsc"
ORDER_V2 = SCHEMAS / "orders" / "order_placed.v2.avsc"
PAYMENT_V1 = SCHEMAS / "payments" / "payment_received.v1.avsc"


class OrderStatus(enum.StrEnum):
    NEW = "NEW"
    PAID = "PAID"
    SHIPPED = "SHIPPED"


class OrderStatusV2(enum.Enum):
    """A plain Enum (not a str): its members must be written as their values."""

    NEW = "NEW"
    PAID = "PAID"
    SHIPPED = "SHIPPED"
    CANCELLED = "CANCELLED"


class Address(BaseModel):
    street: str
    city: str


class Customer(BaseModel):
    name: str
    email: str | None = None
    address: Address | None = None


class Line(BaseModel):
    sku: str
    quantity: int
    unit_price: Decimal


class OrderPlaced(BaseModel):
    order_id: uuid.UUID
    customer: Customer
    status: OrderStatus
    lines: list[Line]
    tags: dict[str, str]
    total: float
    priority: int
    gift: bool
    signature: bytes
    placed_at: dt.datetime
    delivery_date: dt.date | None = None
    note: str | None = None


class OrderPlacedV2(BaseModel):
    order_id: uuid.UUID
    customer: Customer
    status: OrderStatusV2
    lines: list[Line]
    tags: dict[str, str]
    total: float
    priority: int
    gift: bool
    signature: bytes
    placed_at: dt.datetime
    delivery_date: dt.date | None = None
    note: str | None = None
    channel: str = "web"


class PaymentReceived(BaseModel):
    payment_id: str
    amount_cents: int
    received_at: dt.datetime


def order(**overrides: Any) -> OrderPlaced:
    """A fully populated order; timestamps at millisecond precision, as Avro keeps them."""
    values: dict[str, Any] = {
        "order_id": uuid.UUID("8d3c2f6e-1b7a-4f0e-9c55-2a9b1f3e4d10"),
        "customer": Customer(
            name="Ada", email="ada@example.org", address=Address(street="1 Main St", city="Oslo")
        ),
        "status": OrderStatus.PAID,
        "lines": [
            Line(sku="SKU-1", quantity=2, unit_price=Decimal("19.99")),
            Line(sku="SKU-2", quantity=1, unit_price=Decimal("89.90")),
        ],
        "tags": {"source": "test", "campaign": "winter"},
        "total": 129.88,
        "priority": 2**40,
        "gift": True,
        "signature": b"\x00\xffsig",
        "placed_at": dt.datetime(2026, 11, 27, 10, 30, 15, 123000, tzinfo=dt.UTC),
        "delivery_date": dt.date(2026, 12, 1),
        "note": "leave at the door",
    }
    values.update(overrides)
    return OrderPlaced(**values)
