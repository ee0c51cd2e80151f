"""Loading .avsc files, discovering versions, and the local BACKWARD compatibility check."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from streams.exceptions import SchemaError
from streams.serde import AvroSchema, check_backward_compatible, discover_schemas, load_schema
from streams.serde.schemas import parse_schema

from .models import ORDER_V1, ORDER_V2, PAYMENT_V1, SCHEMAS


def record(*fields: dict[str, Any], name: str = "Rec") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "tests.compat", "fields": list(fields)}


def schema(document: dict[str, Any], version: int = 1) -> AvroSchema:
    return parse_schema(json.dumps(document), version=version)


def write(root: Path, relative: str, content: dict[str, Any] | str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


# --- load_schema / parse_schema ----------------------------------------------------------------


def test_load_schema_takes_the_full_name_and_the_version_from_the_file() -> None:
    loaded = load_schema(ORDER_V2)

    assert loaded.name == "tests.orders.OrderPlaced"
    assert loaded.subject == "tests.orders.OrderPlaced"
    assert loaded.version == 2
    assert loaded.path == ORDER_V2
    assert loaded.parsed["fields"][-1]["name"] == "channel"
    assert json.loads(loaded.text) == loaded.parsed


def test_text_is_the_same_however_the_file_is_formatted(tmp_path: Path) -> None:
    original = json.loads(ORDER_V1.read_text())
    reordered = write(tmp_path, "x/order_placed.v1.avsc", json.dumps(original, indent=7))

    assert load_schema(reordered).text == load_schema(ORDER_V1).text
    assert "\n" not in load_schema(ORDER_V1).text


def test_schemas_are_equal_by_name_version_and_text() -> None:
    first, second = load_schema(ORDER_V1), load_schema(ORDER_V1)

    assert first == second
    assert hash(first) == hash(second)
    assert first != load_schema(ORDER_V2)


@pytest.mark.parametrize(
    "file_name",
    [
        "order_placed.avsc",
        "order_placed.v0.avsc",
        "order_placed.v01.avsc",
        "order_placed.V1.avsc",
        "order-placed.v1.avsc",
        "order_placed.v1.json",
        "order_placed.1.avsc",
    ],
)
def test_load_schema_rejects_a_file_name_without_record_and_version(
    tmp_path: Path, file_name: str
) -> None:
    path = write(tmp_path, file_name, record({"name": "a", "type": "int"}))

    with pytest.raises(SchemaError, match=r"file name must be <record>\.v<N>\.avsc"):
        load_schema(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type": "record", "name": "X", "fields": [}', "not valid JSON"),
        ('"string"', "top level must be an Avro record"),
        ('{"type": "enum", "name": "E", "symbols": ["A"]}', "top level must be an Avro record"),
        (json.dumps(record({"name": "a", "type": "Nope"})), "not a valid Avro schema"),
        (json.dumps(record({"name": "a", "type": "int"}, name="1Bad")), "not a valid Avro"),
        (
            json.dumps(record({"name": "a", "type": "int"}, {"name": "a", "type": "long"})),
            "already in use",
        ),
        (json.dumps(record({"name": "a", "type": "int", "default": "x"})), "Default value"),
        (
            json.dumps(record({"name": "a", "type": {"type": "long", "logicalType": "ts-millis"}})),
            "logicalType would be ignored",
        ),
        (
            json.dumps(
                record({"name": "a", "type": {"type": "int", "logicalType": "timestamp-millis"}})
            ),
            "requires literal type long",
        ),
        (
            json.dumps(record({"name": "a", "type": {"type": "bytes", "logicalType": "decimal"}})),
            "decimal precision",
        ),
    ],
    ids=[
        "json",
        "primitive",
        "enum",
        "unknown-type",
        "bad-name",
        "duplicate-field",
        "bad-default",
        "misspelled-logical-type",
        "logical-type-on-wrong-base",
        "decimal-without-precision",
    ],
)
def test_invalid_schema_text_is_a_schema_error_saying_what_is_wrong(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, "x/thing.v1.avsc", text)

    with pytest.raises(SchemaError, match=expected) as raised:
        load_schema(path)
    assert str(path) in raised.value.message


# --- discover_schemas ---------------------------------------------------------------------------


def test_discover_schemas_groups_versions_by_full_name_in_ascending_order() -> None:
    found = discover_schemas(SCHEMAS)

    assert sorted(found) == ["tests.orders.OrderPlaced", "tests.payments.PaymentReceived"]
    assert [s.version for s in found["tests.orders.OrderPlaced"]] == [1, 2]
    assert [s.version for s in found["tests.payments.PaymentReceived"]] == [1]


def test_discover_schemas_lists_every_problem_at_once(tmp_path: Path) -> None:
    base = json.loads(ORDER_V1.read_text())
    write(tmp_path, "orders/order_placed.v1.avsc", base)
    write(tmp_path, "orders/order_placed.v3.avsc", base)
    write(tmp_path, "orders/order_placed.avsc", base)
    write(tmp_path, "orders/broken.v1.avsc", "{not json")
    write(tmp_path, "other/order_placed.v1.avsc", base)
    payment = json.loads(PAYMENT_V1.read_text())
    write(tmp_path, "payments/payment_received.v1.avsc", payment)
    write(tmp_path, "payments/payment.v2.avsc", payment)

    with pytest.raises(SchemaError) as raised:
        discover_schemas(tmp_path)

    message = raised.value.message
    assert "but not v2: versions must run 1..N without gaps" in message
    assert "order_placed.avsc: file name must be" in message
    assert "broken.v1.avsc: not valid JSON" in message
    assert "tests.orders.OrderPlaced v1 is defined twice" in message
    assert "versions of tests.payments.PaymentReceived are spread over different file names" in (
        message
    )
    assert "5 problem(s)" in message


def test_versions_must_start_at_one(tmp_path: Path) -> None:
    write(tmp_path, "orders/order_placed.v2.avsc", json.loads(ORDER_V1.read_text()))

    with pytest.raises(SchemaError, match="found versions 2 but not v1"):
        discover_schemas(tmp_path)


def test_discover_schemas_on_a_missing_folder_is_a_schema_error(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="is not a folder"):
        discover_schemas(tmp_path / "nope")


# --- check_backward_compatible ------------------------------------------------------------------


def test_the_fixture_v2_reads_v1_adding_a_field_with_default_and_an_enum_symbol() -> None:
    assert check_backward_compatible(load_schema(ORDER_V1), load_schema(ORDER_V2)) == []


def test_v1_cannot_read_v2_because_an_enum_symbol_is_missing() -> None:
    problems = check_backward_compatible(load_schema(ORDER_V2), load_schema(ORDER_V1))

    assert len(problems) == 1
    assert problems[0].startswith("status: enum symbols")
    assert "CANCELLED" in problems[0]


def test_adding_a_field_without_default_is_incompatible() -> None:
    old = schema(record({"name": "a", "type": "string"}))
    new = schema(record({"name": "a", "type": "string"}, {"name": "b", "type": "int"}), 2)

    assert check_backward_compatible(old, new) == [
        (
            "b: added without a default, but records written with the old schema lack it"
            " (give it a default)"
        )
    ]


def test_adding_a_field_with_a_default_or_removing_one_is_compatible() -> None:
    old = schema(record({"name": "a", "type": "string"}, {"name": "gone", "type": "int"}))
    new = schema(
        record({"name": "a", "type": "string"}, {"name": "b", "type": "int", "default": 0}), 2
    )

    assert check_backward_compatible(old, new) == []


def test_promotions_int_to_long_and_float_to_double_are_compatible() -> None:
    old = schema(record({"name": "n", "type": "int"}, {"name": "x", "type": "float"}))
    new = schema(record({"name": "n", "type": "long"}, {"name": "x", "type": "double"}), 2)

    assert check_backward_compatible(old, new) == []


def test_every_incompatible_field_is_reported_with_its_nested_path() -> None:
    old_doc = json.loads(ORDER_V1.read_text())
    new_doc = copy.deepcopy(old_doc)
    customer = new_doc["fields"][1]["type"]
    address = customer["fields"][2]["type"][1]
    address["fields"].append({"name": "zip", "type": "string"})
    line = new_doc["fields"][3]["type"]["items"]
    line["fields"][1]["type"] = "string"
    new_doc["fields"][4]["type"]["values"] = "int"
    new_doc["fields"][11] = {"name": "note", "type": "string"}

    problems = check_backward_compatible(schema(old_doc), schema(new_doc, 2))

    assert problems == [
        (
            "customer.address.zip: added without a default, but records written with the old"
            " schema lack it (give it a default)"
        ),
        (
            "lines[].quantity: reader type: string not compatible with writer type: int:"
            " the old type cannot be promoted to the new one"
        ),
        (
            "tags{}: reader type: int not compatible with writer type: string: the old type cannot"
            " be promoted to the new one"
        ),
        "note: the old schema allows null and the new one does not",
    ]


def test_renaming_the_record_is_incompatible_unless_aliased() -> None:
    old = schema(record({"name": "a", "type": "string"}))
    renamed = record({"name": "a", "type": "string"}, name="Other")

    problems = check_backward_compatible(old, schema(renamed, 2))
    assert problems == [
        (
            'the record: record renamed from tests.compat.Rec to tests.compat.Other (add "aliases":'
            ' ["tests.compat.Rec"])'
        )
    ]

    renamed["aliases"] = ["tests.compat.Rec"]
    assert check_backward_compatible(old, schema(renamed, 2)) == []


def test_a_field_renamed_with_an_alias_is_compatible() -> None:
    old = schema(record({"name": "a", "type": "string"}))
    new = schema(record({"name": "b", "type": "string", "aliases": ["a"]}), 2)

    assert check_backward_compatible(old, new) == []
