"""check_binding: every kind of difference between a pydantic model and an Avro record."""

from __future__ import annotations

import datetime as dt
import enum
import json
import uuid
from decimal import Decimal
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

from streams.exceptions import SchemaError
from streams.serde import AvroSchema, check_binding, load_schema
from streams.serde.binding import binding_problems
from streams.serde.schemas import parse_schema

from .models import ORDER_V1, ORDER_V2, PAYMENT_V1, OrderPlaced, OrderPlacedV2, PaymentReceived


def record(*fields: dict[str, Any]) -> AvroSchema:
    document = {"type": "record", "name": "Rec", "namespace": "tests.binding", "fields": fields}
    return parse_schema(json.dumps(document))


def one(name: str, avro_type: Any, **extra: Any) -> AvroSchema:
    return record({"name": name, "type": avro_type, **extra})


class Color(enum.StrEnum):
    RED = "RED"
    GREEN = "GREEN"


class Size(enum.IntEnum):
    S = 1


COLOR = {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"]}
MILLIS = {"type": "long", "logicalType": "timestamp-millis"}
MICROS = {"type": "long", "logicalType": "timestamp-micros"}
DATE = {"type": "int", "logicalType": "date"}
DECIMAL = {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}
FIXED_DECIMAL = {**DECIMAL, "type": "fixed", "name": "Money", "size": 8}
UUID = {"type": "string", "logicalType": "uuid"}


# --- models that match ------------------------------------------------------------------------


def test_the_fixture_models_match_their_schemas() -> None:
    check_binding(OrderPlaced, load_schema(ORDER_V1))
    check_binding(OrderPlacedV2, load_schema(ORDER_V2))
    check_binding(PaymentReceived, load_schema(PAYMENT_V1))


@pytest.mark.parametrize(
    ("annotation", "avro_type"),
    [
        (str, "string"),
        (int, "int"),
        (int, "long"),
        (float, "float"),
        (float, "double"),
        (bool, "boolean"),
        (bytes, "bytes"),
        (bytes, {"type": "fixed", "name": "Sig", "size": 4}),
        (dt.datetime, MILLIS),
        (dt.datetime, MICROS),
        (dt.date, DATE),
        (Decimal, DECIMAL),
        (Decimal, FIXED_DECIMAL),
        (uuid.UUID, UUID),
        (Color, COLOR),
        (list[int], {"type": "array", "items": "long"}),
        (dict[str, float], {"type": "map", "values": "double"}),
        (list[int | None], {"type": "array", "items": ["null", "int"]}),
        (Annotated[int, Field(ge=0)], "int"),
        (str | None, ["null", "string"]),
        (str | None, ["string", "null"]),
    ],
)
def test_every_supported_type_pair_matches(annotation: Any, avro_type: Any) -> None:
    model = _model_with(annotation)

    assert binding_problems(model, one("x", avro_type)) == []


def test_a_field_alias_is_its_avro_name() -> None:
    class Aliased(BaseModel):
        order_id: str = Field(alias="orderId")

    check_binding(Aliased, one("orderId", "string"))


def test_a_recursive_model_is_checked_without_looping() -> None:
    class Node(BaseModel):
        value: int
        children: list[Node]

    node = {
        "type": "record",
        "name": "Node",
        "namespace": "tests.binding",
        "fields": [
            {"name": "value", "type": "int"},
            {"name": "children", "type": {"type": "array", "items": "tests.binding.Node"}},
        ],
    }
    check_binding(Node, parse_schema(json.dumps(node)))


# --- each kind of difference -------------------------------------------------------------------


def test_a_field_only_in_the_model_is_reported() -> None:
    class Model(BaseModel):
        a: str
        extra: int

    assert binding_problems(Model, one("a", "string")) == [
        "extra: in model Model but not in the schema record tests.binding.Rec"
    ]


def test_a_field_only_in_the_schema_is_reported_even_if_the_model_has_defaults() -> None:
    class Model(BaseModel):
        a: str = "x"

    schema = record({"name": "a", "type": "string"}, {"name": "b", "type": "int", "default": 0})

    problems = binding_problems(Model, schema)
    assert problems == ["b: in the schema record tests.binding.Rec but not in model Model"]


@pytest.mark.parametrize(
    ("annotation", "avro_type", "expected"),
    [
        (int, "string", "model type int does not match schema type string (expected int or long)"),
        (str, "int", "expected string"),
        (bool, "int", "expected boolean"),
        (int, "boolean", "expected int or long"),
        (float, "long", "expected double or float"),
        (bytes, "string", "expected bytes or fixed"),
        (str, UUID, "schema type string (uuid) (expected string)"),
        (int, MILLIS, "schema type long (timestamp-millis) (expected int or long)"),
        (
            dt.datetime,
            "long",
            "expected long with logicalType timestamp-micros or timestamp-millis",
        ),
        (dt.date, "int", "expected int with logicalType date"),
        (dt.date, MILLIS, "expected int with logicalType date"),
        (Decimal, "bytes", "expected bytes or fixed with logicalType decimal"),
        (uuid.UUID, "string", "expected string with logicalType uuid"),
        (Color, "string", "schema type string (expected an enum)"),
        (list[int], {"type": "map", "values": "int"}, "expected an array"),
        (dict[str, int], {"type": "array", "items": "int"}, "expected a map"),
        (int, ["int", "string"], "schema type [int, string]"),
    ],
)
def test_a_type_mismatch_names_both_types_and_what_was_expected(
    annotation: Any, avro_type: Any, expected: str
) -> None:
    problems = binding_problems(_model_with(annotation), one("x", avro_type))

    assert len(problems) == 1
    assert problems[0].startswith("x: model type")
    assert expected in problems[0]


def test_optional_in_the_model_but_required_in_the_schema() -> None:
    problems = binding_problems(_model_with(str | None), one("x", "string"))

    assert problems == [
        (
            "x: the model allows None but the schema type string is not nullable"
            ' (use ["null", ...] with "default": null, or drop None from the model)'
        )
    ]


def test_nullable_in_the_schema_but_required_in_the_model() -> None:
    problems = binding_problems(_model_with(str), one("x", ["null", "string"], default=None))

    assert problems == [
        (
            "x: the schema allows null but the model type str does not"
            " (a null from the topic would fail validation: make the field Optional)"
        )
    ]


def test_a_model_default_of_none_needs_a_null_default_in_the_schema() -> None:
    class Model(BaseModel):
        x: str | None = None

    assert binding_problems(Model, one("x", ["null", "string"])) == [
        'x: the model defaults to None but the schema field has no default (add "default": null)'
    ]
    assert binding_problems(Model, one("x", ["null", "string"], default=None)) == []


def test_a_required_optional_field_needs_no_schema_default() -> None:
    class Model(BaseModel):
        x: str | None

    assert binding_problems(Model, one("x", ["null", "string"])) == []


def test_enum_symbols_must_match_the_values_in_both_directions() -> None:
    class Model(BaseModel):
        x: Color

    schema = one("x", {"type": "enum", "name": "Color", "symbols": ["RED", "BLUE"]})

    assert binding_problems(Model, schema) == [
        "x: enum values ['GREEN'] of Color are not symbols of tests.binding.Color",
        "x: enum symbols ['BLUE'] of tests.binding.Color are not values of Color",
    ]


def test_an_enum_with_int_values_is_reported() -> None:
    schema = one("x", {"type": "enum", "name": "Size", "symbols": ["S"]})

    assert binding_problems(_model_with(Size), schema) == ["x: enum Size must have str values"]


def test_map_keys_must_be_str() -> None:
    problems = binding_problems(
        _model_with(dict[int, str]), one("x", {"type": "map", "values": "string"})
    )

    assert problems == ["x: Avro map keys are strings; the model has dict[int, str]"]


@pytest.mark.parametrize("annotation", [set[int], Any, list, tuple[int, str], int | str])
def test_a_python_type_without_avro_mapping_is_reported(annotation: Any) -> None:
    problems = binding_problems(_model_with(annotation), one("x", "string"))

    assert len(problems) == 1
    assert "has no Avro mapping" in problems[0]


def test_differences_in_nested_records_lists_and_maps_carry_their_path() -> None:
    class Address(BaseModel):
        city: int

    class Line(BaseModel):
        sku: str

    class Customer(BaseModel):
        address: Address

    class Order(BaseModel):
        customer: Customer
        lines: list[Line]
        notes: dict[str, Line]

    line = {"type": "record", "name": "Line", "fields": [{"name": "sku", "type": "long"}]}
    schema = record(
        {
            "name": "customer",
            "type": {
                "type": "record",
                "name": "Customer",
                "fields": [
                    {
                        "name": "address",
                        "type": {
                            "type": "record",
                            "name": "Address",
                            "fields": [{"name": "city", "type": "string"}],
                        },
                    }
                ],
            },
        },
        {"name": "lines", "type": {"type": "array", "items": line}},
        {"name": "notes", "type": {"type": "map", "values": "tests.binding.Line"}},
    )

    problems = binding_problems(Order, schema)

    assert [p.split(":")[0] for p in problems] == [
        "customer.address.city",
        "lines[].sku",
        "notes{}.sku",
    ]


def test_check_binding_raises_one_schema_error_listing_every_difference() -> None:
    class Model(BaseModel):
        a: int
        b: str | None
        c: Color
        only_model: str

    schema = record(
        {"name": "a", "type": "string"},
        {"name": "b", "type": "string"},
        {"name": "c", "type": {"type": "enum", "name": "Color", "symbols": ["RED"]}},
        {"name": "only_schema", "type": "int"},
    )

    with pytest.raises(SchemaError) as raised:
        check_binding(Model, schema)

    message = raised.value.message
    assert message.startswith(
        "model Model does not match Avro schema tests.binding.Rec v1 (5 difference(s)):"
    )
    for expected in (
        "  - only_model: in model",
        "  - a: model type int does not match schema type string",
        "  - b: the model allows None",
        "  - c: enum values ['GREEN']",
        "  - only_schema: in the schema record",
    ):
        assert expected in message
    assert "agree field by field" in raised.value.hint


def _model_with(annotation: Any) -> type[BaseModel]:
    return type("Model", (BaseModel,), {"__annotations__": {"x": annotation}})
