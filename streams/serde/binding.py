"""Does a pydantic model match an Avro record schema? Checked once, at start-up.

Field names must match exactly in both directions (a field's alias, if it has one, is its Avro
name). Types map as follows::

    str            string                   X | None        ["null", X] (default null allowed)
    int            int | long               list[X]         array of X
    float          float | double           dict[str, X]    map of X
    bool           boolean                  BaseModel       record (checked field by field)
    bytes          bytes | fixed            Enum (str)      enum with the same symbols
    datetime       long timestamp-millis | timestamp-micros
    date           int date                 Decimal         bytes | fixed decimal
    UUID           string uuid

A model field that may be None must be a union with "null" in the schema and the other way
round; a model field that defaults to None needs ``"default": null`` in the schema.
"""

from __future__ import annotations

import datetime as dt
import enum
import types
import typing
import uuid
from decimal import Decimal
from typing import Any

import fastavro
from pydantic import BaseModel

from streams.exceptions import SchemaError

if typing.TYPE_CHECKING:
    from streams.serde.schemas import AvroSchema

__all__ = ["binding_problems", "check_binding"]

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_TIMESTAMPS = frozenset({"timestamp-millis", "timestamp-micros"})


def check_binding(model: type[BaseModel], schema: AvroSchema) -> None:
    """Raise SchemaError listing every difference between ``model`` and ``schema``.

    Each line names the field path (``customer.address.city``, ``lines[].sku``) and what differs.
    Change the model or write a new schema version so that both agree; nothing is read or
    written until they do.
    """
    problems = binding_problems(model, schema)
    if problems:
        raise SchemaError(
            f"model {model.__name__} does not match Avro schema {schema.name}"
            f" v{schema.version} ({len(problems)} difference(s)):\n"
            + "\n".join(f"  - {problem}" for problem in problems),
            hint=f"make {model.__name__} and {schema.origin} agree field by field",
        )


def binding_problems(model: type[BaseModel], schema: AvroSchema) -> list[str]:
    """Every difference between ``model`` and ``schema``, one readable line each; [] if none."""
    named: dict[str, Any] = {}
    record = fastavro.parse_schema(schema.parsed, named_schemas=named)
    if not isinstance(record, dict):
        raise SchemaError(f"{schema.origin}: the top level must be an Avro record")
    checker = _BindingChecker(named)
    checker.record(model, record, "")
    return checker.problems


class _BindingChecker:
    def __init__(self, named: dict[str, Any]) -> None:
        self.named = named
        self.problems: list[str] = []
        self._in_progress: set[tuple[type[BaseModel], str]] = set()

    def record(self, model: type[BaseModel], record: dict[str, Any], path: str) -> None:
        key = (model, record["name"])
        if key in self._in_progress:  # a recursive model: this pair is being checked already
            return
        self._in_progress.add(key)
        try:
            self._fields(model, record, path)
        finally:
            self._in_progress.discard(key)

    def _fields(self, model: type[BaseModel], record: dict[str, Any], path: str) -> None:
        model_fields = {(info.alias or name): info for name, info in model.model_fields.items()}
        schema_fields = {f["name"]: f for f in record["fields"]}
        for name in model_fields:
            if name not in schema_fields:
                self.problems.append(
                    f"{_join(path, name)}: in model {model.__name__} but not in the schema"
                    f" record {record['name']}"
                )
        for name, avro_field in schema_fields.items():
            info = model_fields.get(name)
            field_path = _join(path, name)
            if info is None:
                self.problems.append(
                    f"{field_path}: in the schema record {record['name']} but not in model"
                    f" {model.__name__}"
                )
                continue
            avro_type = self.resolve(avro_field["type"])
            if (
                info.default is None
                and _split_optional(info.annotation)[1]
                and _split_nullable(avro_type)[1]
                and "default" not in avro_field
            ):
                self.problems.append(
                    f"{field_path}: the model defaults to None but the schema field has no default"
                    ' (add "default": null)'
                )
            self.check(info.annotation, avro_type, field_path)

    def check(self, annotation: Any, avro_type: Any, path: str) -> None:
        py_type, py_nullable = _split_optional(annotation)
        inner, avro_nullable = _split_nullable(avro_type)
        if py_nullable and not avro_nullable:
            self.problems.append(
                f"{path}: the model allows None but the schema type {_describe(avro_type)} is not"
                ' nullable (use ["null", ...] with "default": null, or drop None from the model)'
            )
        elif avro_nullable and not py_nullable:
            self.problems.append(
                f"{path}: the schema allows null but the model type {_name(py_type)} does not"
                " (a null from the topic would fail validation: make the field Optional)"
            )
        self.check_value(py_type, self.resolve(inner), path)

    def check_value(self, py_type: Any, avro_type: Any, path: str) -> None:
        category = _category(py_type)
        if category is None:
            self.problems.append(
                f"{path}: model type {_name(py_type)} has no Avro mapping (use str, int, float,"
                " bool, bytes, datetime, date, Decimal, UUID, an Enum, a model, list or dict)"
            )
            return
        if category == "map" and (typing.get_args(py_type) or (Any,))[0] is not str:
            self.problems.append(
                f"{path}: Avro map keys are strings; the model has {_name(py_type)}"
            )
            return
        if not _matches(py_type, category, avro_type):
            self.problems.append(
                f"{path}: model type {_name(py_type)} does not match schema type"
                f" {_describe(avro_type)} (expected {_describe_expected(py_type, category)})"
            )
        elif category == "record":
            self.record(py_type, avro_type, f"{path}.")
        elif category == "enum":
            self.enum(py_type, avro_type, path)
        elif category == "array":
            self.check(_arg(py_type, 0), self.resolve(avro_type["items"]), f"{path}[]")
        elif category == "map":
            self.check(_arg(py_type, 1), self.resolve(avro_type["values"]), f"{path}{{}}")

    def enum(self, py_type: type[enum.Enum], avro_type: dict[str, Any], path: str) -> None:
        values = [member.value for member in py_type]
        if not all(isinstance(value, str) for value in values):
            self.problems.append(f"{path}: enum {py_type.__name__} must have str values")
            return
        symbols = set(avro_type["symbols"])
        only_model = [value for value in values if value not in symbols]
        only_schema = [symbol for symbol in avro_type["symbols"] if symbol not in values]
        if only_model:
            self.problems.append(
                f"{path}: enum values {only_model} of {py_type.__name__} are not symbols of"
                f" {avro_type['name']}"
            )
        if only_schema:
            self.problems.append(
                f"{path}: enum symbols {only_schema} of {avro_type['name']} are not values of"
                f" {py_type.__name__}"
            )

    def resolve(self, avro_type: Any) -> Any:
        """Named references -> their definition; "int" -> {"type": "int"}; unions stay lists."""
        if isinstance(avro_type, str):
            if avro_type in _PRIMITIVES:
                return {"type": avro_type}
            return self.named[avro_type]
        if isinstance(avro_type, dict) and not isinstance(avro_type.get("type"), str):
            return self.resolve(avro_type["type"])
        return avro_type


def _expected(py_type: Any) -> tuple[frozenset[str], frozenset[str | None]] | None:
    """(Avro types, logical types) that a scalar Python type maps to; None if not a scalar."""
    plain: frozenset[str | None] = frozenset({None})
    table: list[tuple[type, frozenset[str], frozenset[str | None]]] = [
        # order matters: bool is an int, datetime is a date
        (bool, frozenset({"boolean"}), plain),
        (int, frozenset({"int", "long"}), plain),
        (float, frozenset({"float", "double"}), plain),
        (str, frozenset({"string"}), plain),
        (bytes, frozenset({"bytes", "fixed"}), plain),
        (dt.datetime, frozenset({"long"}), frozenset(_TIMESTAMPS)),
        (dt.date, frozenset({"int"}), frozenset({"date"})),
        (Decimal, frozenset({"bytes", "fixed"}), frozenset({"decimal"})),
        (uuid.UUID, frozenset({"string"}), frozenset({"uuid"})),
    ]
    if not isinstance(py_type, type):
        return None
    for candidate, kinds, logical in table:
        if issubclass(py_type, candidate):
            return kinds, logical
    return None


def _category(py_type: Any) -> str | None:
    """record / enum / array / map / scalar, or None for a type with no Avro mapping."""
    if isinstance(py_type, type) and issubclass(py_type, BaseModel):
        return "record"
    if isinstance(py_type, type) and issubclass(py_type, enum.Enum):
        return "enum"
    origin = typing.get_origin(py_type)
    if origin is list:
        return "array"
    if origin is dict:
        return "map"
    return "scalar" if _expected(py_type) is not None else None


def _matches(py_type: Any, category: str, avro_type: Any) -> bool:
    if not isinstance(avro_type, dict):
        return False  # a union of several non-null types: no Python type here maps to it
    if category != "scalar":
        return bool(avro_type["type"] == category)
    expected = _expected(py_type)
    if expected is None:
        return False
    kinds, logical = expected
    return avro_type["type"] in kinds and avro_type.get("logicalType") in logical


def _describe_expected(py_type: Any, category: str) -> str:
    expected = _expected(py_type)
    if category != "scalar" or expected is None:
        return f"{'an' if category[0] in 'aeiou' else 'a'} {category}"
    kinds, logical = expected
    names = " or ".join(sorted(kinds))
    logical_names = sorted(name for name in logical if name is not None)
    return f"{names} with logicalType {' or '.join(logical_names)}" if logical_names else names


def _describe(avro_type: Any) -> str:
    if isinstance(avro_type, list):
        return "[" + ", ".join(_describe(branch) for branch in avro_type) + "]"
    if isinstance(avro_type, str):
        return avro_type
    kind = avro_type.get("type")
    if not isinstance(kind, str):
        return _describe(kind)
    if kind in {"record", "enum", "fixed"}:
        suffix = f" {avro_type.get('name')}"
    elif kind in {"array", "map"}:
        suffix = f" of {_describe(avro_type.get('items' if kind == 'array' else 'values'))}"
    else:
        logical = avro_type.get("logicalType")
        suffix = f" ({logical})" if logical else ""
    return kind + suffix


def _split_optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); ``X`` -> (X, False). Annotated[...] metadata is dropped."""
    annotation = _strip_annotated(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        rest = [arg for arg in args if arg is not type(None)]
        nullable = len(rest) < len(args)
        if len(rest) == 1:
            return _strip_annotated(rest[0]), nullable
        return annotation, nullable
    return annotation, False


def _split_nullable(avro_type: Any) -> tuple[Any, bool]:
    """``["null", X]`` -> (X, True); a non-union -> (itself, False)."""
    if not isinstance(avro_type, list):
        return avro_type, False
    rest = [branch for branch in avro_type if branch != "null"]
    nullable = len(rest) < len(avro_type)
    if len(rest) == 1:
        return rest[0], nullable
    return rest, nullable


def _strip_annotated(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _arg(annotation: Any, index: int) -> Any:
    args = typing.get_args(annotation)
    return args[index] if len(args) > index else Any


def _name(py_type: Any) -> str:
    if isinstance(py_type, type) and not typing.get_args(py_type):
        return py_type.__name__
    return repr(py_type).replace("typing.", "")


def _join(path: str, name: str) -> str:
    return f"{path}{name}" if path.endswith(".") or not path else f"{path}.{name}"
