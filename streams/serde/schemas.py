"""Avro schema files: loading and local compatibility checks (no registry).

Layout: ``schemas/<domain>/<record>.v<N>.avsc``, one file per version of one record, versions
numbered 1, 2, 3 ... without gaps. Every file holds a top-level Avro ``record``; its full name
(``namespace.Name``) is the registry subject (RecordNameStrategy), so schemas can be checked and
registered without knowing which topics carry them. ``streams.serde.registry`` compares them
with the schema registry; ``streams schemas check`` runs both.
"""

from __future__ import annotations

import itertools
import json
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import avro.errors
import avro.schema
import fastavro
import fastavro.schema
from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityType,
    SchemaIncompatibilityType,
    lookup_writer_field,
    schema_name_equals,
)

from streams.exceptions import SchemaError

__all__ = [
    "FILE_NAME",
    "AvroSchema",
    "SchemaProblem",
    "check_backward_compatible",
    "discover_schemas",
    "load_schema",
    "parse_schema",
    "scan_schema_dir",
    "version_problems",
]

FILE_NAME = re.compile(r"^(?P<record>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>[1-9][0-9]*)\.avsc$")
"""``<record>.v<N>.avsc``: N starts at 1 and has no leading zeros, so names sort unambiguously."""


@dataclass(frozen=True)
class AvroSchema:
    """One version of one Avro record schema.

    ``name`` is the record's full name (also its registry subject), ``version`` comes from the
    file name, ``text`` is the schema as compact JSON with sorted keys (what is registered), and
    ``parsed`` the same as a dict. ``path`` is the file it came from, if any.
    """

    name: str
    version: int
    text: str
    parsed: dict[str, Any] = field(compare=False, repr=False)
    path: Path | None = field(default=None, compare=False)

    @property
    def subject(self) -> str:
        """The registry subject: the record's full name (RecordNameStrategy)."""
        return self.name

    @property
    def origin(self) -> str:
        """Where the schema came from, for messages: the file, else name and version."""
        return str(self.path) if self.path is not None else f"{self.name} v{self.version}"


def parse_schema(text: str, *, version: int = 1, path: Path | None = None) -> AvroSchema:
    """Parse and validate the JSON text of a top-level Avro record schema.

    Raises SchemaError saying what is wrong: invalid JSON, not a record, invalid Avro (unknown
    type, bad name, duplicate field), a default that does not match its type, or a logicalType
    that would be silently ignored (misspelled, or on the wrong base type). Fix the schema text.
    """
    where = str(path) if path is not None else "schema"
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise SchemaError(f"{where}: not valid JSON: {error}") from error
    if not isinstance(document, dict) or document.get("type") != "record":
        raise SchemaError(
            f'{where}: the top level must be an Avro record ({{"type": "record", ...}})'
        )
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    full_name = _parse_avro(canonical, where).fullname
    try:
        fastavro.parse_schema(document)
    except (fastavro.schema.SchemaParseException, ValueError, TypeError, KeyError) as error:
        raise SchemaError(f"{where}: not a valid Avro schema: {error}") from error
    return AvroSchema(name=full_name, version=version, text=canonical, parsed=document, path=path)


def load_schema(path: Path) -> AvroSchema:
    """Load one ``<record>.v<N>.avsc`` file.

    Raises SchemaError when the file name does not follow ``<record>.v<N>.avsc``, the file
    cannot be read, or its content is not a valid Avro record schema. Rename or fix the file.
    """
    match = FILE_NAME.match(path.name)
    if match is None:
        raise SchemaError(
            f"{path}: file name must be <record>.v<N>.avsc (for example order_placed.v1.avsc)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SchemaError(f"{path}: cannot read: {error}") from error
    return parse_schema(text, version=int(match["version"]), path=path)


@dataclass(frozen=True)
class SchemaProblem:
    """One thing wrong with a schema file or subject; ``file`` and ``subject`` when known."""

    message: str
    file: str | None = None
    subject: str | None = None

    def __str__(self) -> str:
        return f"{self.file}: {self.message}" if self.file else self.message

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "subject": self.subject, "message": self.message}


def discover_schemas(root: Path) -> dict[str, list[AvroSchema]]:
    """Load every ``*.avsc`` file under ``root``, grouped by record full name, versions ascending.

    Raises SchemaError listing every problem found: unreadable or invalid files, bad file names,
    the same version twice, versions of one record under different file names, or a gap in the
    versions (they must be 1..N). Fix the files; `streams schemas check` shows the same list.
    """
    groups, problems = scan_schema_dir(root)
    if problems:
        raise SchemaError(
            f"{len(problems)} problem(s) with the schemas under {root}:\n"
            + "\n".join(f"  - {problem}" for problem in problems),
            hint="fix the files listed; `streams schemas check` shows the same list",
        )
    return groups


def check_backward_compatible(old: AvroSchema, new: AvroSchema) -> list[str]:
    """Whether ``new`` (as reader) can read every record written with ``old`` (BACKWARD).

    Uses the ``avro`` package's ReaderWriterCompatibilityChecker and returns one readable line per
    problem, with the field path; an empty list means compatible. To fix a problem, give an
    added field a default, keep removed enum symbols (or add an enum default), or alias renames.
    """
    reader = _parse_avro(new.text, new.origin)
    writer = _parse_avro(old.text, old.origin)
    return _compare(reader, writer, "")


# --- private helpers ---------------------------------------------------------------------------


def _parse_avro(text: str, where: str) -> Any:
    """Parse with the avro package; its warnings (an ignored logicalType) are errors here."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parsed = avro.schema.parse(text)
        except avro.errors.AvroException as error:
            raise SchemaError(f"{where}: not a valid Avro schema: {error}") from error
    if caught:
        raise SchemaError(
            f"{where}: {caught[0].message} (the logicalType would be ignored and the value read"
            " as its base type: check its spelling and base type)"
        )
    return parsed


# Over 50 lines: one pass over the files, one problem per kind of bad file.
def scan_schema_dir(root: Path) -> tuple[dict[str, list[AvroSchema]], list[SchemaProblem]]:
    """Load all files under root; group by full name; collect problems instead of raising."""
    if not root.is_dir():
        raise SchemaError(f"{root} is not a folder", hint="pass the folder that holds the .avsc")
    problems: list[SchemaProblem] = []
    by_name: dict[str, list[AvroSchema]] = defaultdict(list)
    for path in sorted(root.rglob("*.avsc")):
        try:
            schema = load_schema(path)
        except SchemaError as error:
            problems.append(SchemaProblem(error.message.removeprefix(f"{path}: "), file=str(path)))
            continue
        by_name[schema.name].append(schema)
    groups: dict[str, list[AvroSchema]] = {}
    for name, found in sorted(by_name.items()):
        found.sort(key=lambda s: s.version)
        unique: list[AvroSchema] = []
        for schema in found:
            if unique and unique[-1].version == schema.version:
                problems.append(
                    SchemaProblem(
                        f"{name} v{schema.version} is defined twice: in {unique[-1].origin} and"
                        f" in {schema.origin}",
                        file=schema.origin,
                        subject=name,
                    )
                )
                continue
            unique.append(schema)
        if len({_file_stem(s) for s in unique}) > 1:
            problems.append(
                SchemaProblem(
                    f"versions of {name} are spread over different file names ("
                    + ", ".join(s.origin for s in unique)
                    + "): keep one <record> name and folder for all versions of a record",
                    subject=name,
                )
            )
        numbers = [s.version for s in unique]
        missing = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
        if missing:
            problems.append(
                SchemaProblem(
                    f"{name}: found versions {', '.join(map(str, numbers))} but not "
                    + ", ".join(f"v{n}" for n in missing)
                    + ": versions must run 1..N without gaps",
                    subject=name,
                )
            )
        groups[name] = unique
    return groups, problems


def _file_stem(schema: AvroSchema) -> tuple[Path, str] | None:
    """(folder, <record>) of the file a schema came from: all versions of a record share it."""
    if schema.path is None:
        return None
    match = FILE_NAME.match(schema.path.name)
    return (schema.path.parent, match["record"] if match else schema.path.name)


def version_problems(versions: list[AvroSchema]) -> list[str]:
    """Each version must read records written with the version before it."""
    problems: list[str] = []
    for old, new in itertools.pairwise(versions):
        problems.extend(
            f"v{new.version} cannot read records written with v{old.version}: {problem}"
            for problem in check_backward_compatible(old, new)
        )
    return problems


def _compare(reader: Any, writer: Any, path: str) -> list[str]:
    """Run the avro checker; where it fails, descend into records so each problem has a path."""
    # avro's checker has an unannotated __init__; the rest of it is typed.
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    result = checker.get_compatibility(reader, writer)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    where = path or "the record"
    reader_inner, reader_nullable = _strip_null(reader)
    writer_inner, writer_nullable = _strip_null(writer)
    if writer_nullable and not reader_nullable:
        return [f"{where}: the old schema allows null and the new one does not"]
    problems: list[str] = []
    if reader_inner.type == writer_inner.type == "record":
        if not schema_name_equals(reader_inner, writer_inner):
            problems.append(
                f"{where}: record renamed from {writer_inner.fullname} to {reader_inner.fullname}"
                f' (add "aliases": ["{writer_inner.fullname}"])'
            )
        for reader_field in reader_inner.fields:
            field_path = f"{path}.{reader_field.name}" if path else reader_field.name
            writer_field = lookup_writer_field(writer_inner, reader_field)
            if writer_field is None:
                if not reader_field.has_default:
                    problems.append(
                        f"{field_path}: added without a default, but records written with the"
                        " old schema lack it (give it a default)"
                    )
            else:
                problems.extend(_compare(reader_field.type, writer_field.type, field_path))
    elif reader_inner.type == writer_inner.type == "array":
        problems = _compare(reader_inner.items, writer_inner.items, f"{path}[]")
    elif reader_inner.type == writer_inner.type == "map":
        problems = _compare(reader_inner.values, writer_inner.values, f"{path}{{}}")
    return problems or [f"{where}: {_explain(result)}"]


def _strip_null(schema: Any) -> tuple[Any, bool]:
    """``["null", X]`` -> (X, True); anything else -> (itself, whether it is a union with null)."""
    if schema.type != "union":
        return schema, False
    branches = [s for s in schema.schemas if s.type != "null"]
    nullable = len(branches) < len(schema.schemas)
    if nullable and len(branches) == 1:
        return branches[0], True
    return schema, nullable


_EXPLANATIONS = {
    SchemaIncompatibilityType.type_mismatch: "{}: the old type cannot be promoted to the new one",
    SchemaIncompatibilityType.missing_enum_symbols: (
        "enum symbols {} were removed but old records may hold them"
        " (keep them, or give the enum a default)"
    ),
    SchemaIncompatibilityType.name_mismatch: "named type renamed ({}): add the old name to aliases",
    SchemaIncompatibilityType.fixed_size_mismatch: "fixed size changed ({})",
    SchemaIncompatibilityType.missing_union_branch: "{}: old records may use that branch",
    SchemaIncompatibilityType.reader_field_missing_default_value: (
        "field(s) {} added without a default (give them a default)"
    ),
}


def _explain(result: Any) -> str:
    messages = "; ".join(sorted(str(message) for message in result.messages))
    kinds = set(result.incompatibilities)
    if len(kinds) == 1:
        return _EXPLANATIONS.get(kinds.pop(), "{}").format(messages)
    return messages
