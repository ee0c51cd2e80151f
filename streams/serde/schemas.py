"""Avro schema files: loading, local compatibility checks, and the schema registry.

Layout: ``schemas/<domain>/<record>.v<N>.avsc``, one file per version of one record, versions
numbered 1, 2, 3 ... without gaps. Every file holds a top-level Avro ``record``; its full name
(``namespace.Name``) is the registry subject (RecordNameStrategy), so schemas can be checked and
registered without knowing which topics carry them.

``streams schemas check`` runs :func:`check_schema_dir`: it loads every file, checks that each
version can read records written with the previous one (BACKWARD, with the ``avro`` package's
checker, no registry needed), and then compares the latest version of each subject with the
registry.
"""

from __future__ import annotations

import itertools
import json
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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
from confluent_kafka.schema_registry import RegisteredSchema, Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from streams.config import KafkaSettings
from streams.exceptions import ConfigError, SchemaError

__all__ = [
    "AvroSchema",
    "RegistryOutcome",
    "SchemaCheckReport",
    "SchemaProblem",
    "SubjectReport",
    "check_against_registry",
    "check_backward_compatible",
    "check_schema_dir",
    "discover_schemas",
    "load_schema",
    "parse_schema",
    "registry_client",
]

FILE_NAME = re.compile(r"^(?P<record>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>[1-9][0-9]*)\.avsc$")
"""``<record>.v<N>.avsc``: N starts at 1 and has no leading zeros, so names sort unambiguously."""

# A registry that has not answered in 10 s is down or overloaded; waiting longer only delays the
# error a start-up or a CI check would report anyway.
REGISTRY_TIMEOUT_S = 10.0
# One quick retry rides out a dropped connection; confluent's default (3 retries, backoff up to
# 20 s) turns `streams schemas check` against a stopped registry into a half-minute hang.
REGISTRY_MAX_RETRIES = 1
REGISTRY_RETRY_WAIT_MS = 200

_NOT_FOUND = 404
# 409: incompatible with the subject's compatibility rule; 422: the registry finds it invalid.
_REJECTED = frozenset({409, 422})
_REGISTRY_HINT = (
    "start it (`streams local up`), point STREAMS_SCHEMA_REGISTRY_URL or --registry at a running "
    "registry, or pass --no-registry to check the files alone"
)


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
    groups, problems = _scan(root)
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


RegistryState = Literal[
    "up-to-date", "behind", "would-register", "registered", "incompatible", "skipped"
]


@dataclass(frozen=True)
class RegistryOutcome:
    """How the registry's view of a subject compares with the latest local version.

    ``up-to-date``: the latest file is the registry's latest version. ``behind``: the file is
    registered but the registry holds a newer version. ``would-register`` / ``registered``: the
    registry lacks the file's schema and accepts it. ``incompatible``: the registry rejects it.
    ``skipped``: not compared because the files have problems. ``registry_version`` is the
    registry's latest version before this check (None: a new subject).
    """

    state: RegistryState
    detail: str
    schema_id: int | None = None
    registry_version: int | None = None
    problems: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "detail": self.detail,
            "schema_id": self.schema_id,
            "registry_version": self.registry_version,
            "problems": list(self.problems),
        }


def check_against_registry(
    client: SchemaRegistryClient, schema: AvroSchema, *, register: bool
) -> list[str]:
    """Ask the registry whether it would accept ``schema`` as the latest version of its subject.

    Returns the registry's objections ([] when it accepts or already has the schema); with
    ``register`` an accepted schema is registered. Raises SchemaError when the registry cannot be
    reached or fails otherwise (not a rejection): start it, fix STREAMS_SCHEMA_REGISTRY_URL or
    its credentials, and look at its log.
    """
    try:
        return list(_compare_with_registry(client, schema, register=register).problems)
    except SchemaError:
        raise
    except Exception as error:
        raise _unreachable(None, error) from error


def registry_client(url: str | None = None) -> SchemaRegistryClient:
    """A schema registry client with a short timeout and one retry.

    ``url`` defaults to STREAMS_SCHEMA_REGISTRY_URL (else the local stack's registry). Raises
    ConfigError for a URL the client does not accept: it must start with http:// or https://.
    """
    resolved = url or KafkaSettings().schema_registry_url
    try:
        return SchemaRegistryClient(
            {
                "url": resolved,
                "timeout": REGISTRY_TIMEOUT_S,
                "max.retries": REGISTRY_MAX_RETRIES,
                "retries.wait.ms": REGISTRY_RETRY_WAIT_MS,
            }
        )
    except (ValueError, TypeError) as error:
        raise ConfigError(f"invalid schema registry URL {resolved!r}: {error}") from error


@dataclass(frozen=True)
class SubjectReport:
    """What `streams schemas check` found for one subject (one record, all its versions)."""

    subject: str
    versions: tuple[int, ...]
    files: tuple[str, ...]
    problems: tuple[str, ...] = ()
    registry: RegistryOutcome | None = None

    @property
    def ok(self) -> bool:
        registry_ok = self.registry is None or not self.registry.problems
        return not self.problems and registry_ok

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "versions": list(self.versions),
            "files": list(self.files),
            "ok": self.ok,
            "problems": list(self.problems),
            "registry": self.registry.to_dict() if self.registry is not None else None,
        }


@dataclass(frozen=True)
class SchemaCheckReport:
    """Everything `streams schemas check` found; ``ok`` is False when anything needs fixing."""

    schemas_dir: str
    registry_url: str | None
    files: int
    subjects: tuple[SubjectReport, ...]
    problems: tuple[SchemaProblem, ...]

    @property
    def ok(self) -> bool:
        return self.files > 0 and not self.problems and all(s.ok for s in self.subjects)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "schemas_dir": self.schemas_dir,
            "registry_url": self.registry_url,
            "files": self.files,
            "problems": [problem.to_dict() for problem in self.problems],
            "subjects": [subject.to_dict() for subject in self.subjects],
        }


def check_schema_dir(
    root: Path, *, registry_url: str | None = None, register: bool = False
) -> SchemaCheckReport:
    """Check every schema under ``root`` and, given ``registry_url``, compare with the registry.

    Local checks: file names, valid Avro records, versions 1..N without gaps, and each version
    BACKWARD compatible with the one before. Registry: the latest version of each subject is
    compared (and with ``register``, registered when the registry accepts it and no local check
    failed). Problems are collected in the report, not raised; SchemaError is raised only when
    the folder is missing or the registry cannot be reached.
    """
    if not root.is_dir():
        raise SchemaError(f"{root} is not a folder", hint="pass --schemas-dir <folder>")
    groups, scan_problems = _scan(root)
    file_count = sum(1 for _ in root.rglob("*.avsc"))
    problems = [p for p in scan_problems if p.subject is None]
    if file_count == 0:
        problems.append(SchemaProblem(f"no .avsc files under {root}: is --schemas-dir right?"))
    local: dict[str, list[str]] = {
        name: _version_problems(versions) + [p.message for p in scan_problems if p.subject == name]
        for name, versions in groups.items()
    }
    clean = not problems and not any(local.values())
    if registry_url is None:
        subjects = [
            _subject_report(name, versions, local[name], None)
            for name, versions in sorted(groups.items())
        ]
    else:
        client = registry_client(registry_url)
        try:
            subjects = [
                _subject_report(
                    name,
                    versions,
                    local[name],
                    _registry_outcome(
                        client,
                        registry_url,
                        versions[-1],
                        register=register,
                        clean=clean,
                        local_problems=bool(local[name]),
                    ),
                )
                for name, versions in sorted(groups.items())
            ]
        finally:
            client.close()
    return SchemaCheckReport(
        schemas_dir=str(root),
        registry_url=registry_url,
        files=file_count,
        subjects=tuple(subjects),
        problems=tuple(problems),
    )


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


def _scan(root: Path) -> tuple[dict[str, list[AvroSchema]], list[SchemaProblem]]:
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


def _subject_report(
    name: str, versions: list[AvroSchema], problems: list[str], outcome: RegistryOutcome | None
) -> SubjectReport:
    return SubjectReport(
        subject=name,
        versions=tuple(s.version for s in versions),
        files=tuple(s.origin for s in versions),
        problems=tuple(problems),
        registry=outcome,
    )


def _registry_outcome(
    client: SchemaRegistryClient,
    url: str,
    latest: AvroSchema,
    *,
    register: bool,
    clean: bool,
    local_problems: bool,
) -> RegistryOutcome:
    """The registry's view of one subject; registration only when every local check passed."""
    if local_problems:
        return RegistryOutcome("skipped", "not compared: fix the local problems first")
    try:
        outcome = _compare_with_registry(client, latest, register=register and clean)
    except SchemaError:
        raise
    except Exception as error:
        raise _unreachable(url, error) from error
    if register and not clean and outcome.state == "would-register":
        return RegistryOutcome(
            "would-register",
            outcome.detail + "; not registered because other schemas have problems",
            registry_version=outcome.registry_version,
        )
    return outcome


def _unreachable(url: str | None, error: Exception) -> SchemaError:
    """Anything but a SchemaRegistryError from the client means no answer came back.

    The client raises httpx's (or httpx2's) TransportError, which it does not re-export, so the
    error is classified by exclusion and its type is named in the message.
    """
    where = f" at {url}" if url else ""
    return SchemaError(
        f"schema registry unreachable{where}: {type(error).__name__}: {error}", hint=_REGISTRY_HINT
    )


def _version_problems(versions: list[AvroSchema]) -> list[str]:
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


def _compare_with_registry(
    client: SchemaRegistryClient, schema: AvroSchema, *, register: bool
) -> RegistryOutcome:
    """Compare with (and maybe register in) the registry; transport errors propagate."""
    candidate = Schema(schema.text, "AVRO")
    try:
        latest = _latest_version(client, schema.subject)
        if latest is None:
            return _register_or_not(
                client, schema, register=register, why="the subject is new", registry_version=None
            )
        registered = _lookup(client, schema.subject, candidate)
        if registered is not None:
            return _registered_outcome(schema, registered, latest)
        if not client.test_compatibility(schema.subject, candidate, "latest"):
            return RegistryOutcome(
                "incompatible",
                f"the registry rejects v{schema.version}",
                registry_version=latest.version,
                problems=(_incompatible_message(schema, latest),),
            )
        return _register_or_not(
            client,
            schema,
            register=register,
            why=f"compatible with registry version {latest.version}",
            registry_version=latest.version,
        )
    except SchemaRegistryError as error:
        if error.http_status_code not in _REJECTED:
            raise SchemaError(
                f"schema registry error for {schema.subject}: {error}",
                hint="check the registry's log and its credentials",
            ) from error
        return RegistryOutcome(
            "incompatible",
            "the registry refused it",
            problems=(
                f"{schema.subject} v{schema.version}: the registry says: {error.error_message}",
            ),
        )


def _register_or_not(
    client: SchemaRegistryClient,
    schema: AvroSchema,
    *,
    register: bool,
    why: str,
    registry_version: int | None,
) -> RegistryOutcome:
    if not register:
        return RegistryOutcome("would-register", why, registry_version=registry_version)
    schema_id = client.register_schema(schema.subject, Schema(schema.text, "AVRO"))
    return RegistryOutcome(
        "registered",
        f"{why}; registered v{schema.version} as schema id {schema_id}",
        schema_id,
        registry_version,
    )


def _registered_outcome(
    schema: AvroSchema, registered: RegisteredSchema, latest: RegisteredSchema
) -> RegistryOutcome:
    if registered.version == latest.version:
        return RegistryOutcome(
            "up-to-date",
            f"registry version {latest.version} (schema id {registered.schema_id})",
            registered.schema_id,
            latest.version,
        )
    return RegistryOutcome(
        "behind",
        f"v{schema.version} is registry version {registered.version}, but the registry has a"
        f" newer version {latest.version}: add it to the schema files",
        registered.schema_id,
        latest.version,
    )


def _latest_version(client: SchemaRegistryClient, subject: str) -> RegisteredSchema | None:
    try:
        # get_version("latest") always asks the registry; get_latest_version caches forever.
        return client.get_version(subject, "latest")
    except SchemaRegistryError as error:
        if error.http_status_code == _NOT_FOUND:
            return None
        raise


def _lookup(client: SchemaRegistryClient, subject: str, schema: Schema) -> RegisteredSchema | None:
    try:
        return client.lookup_schema(subject, schema)
    except SchemaRegistryError as error:
        if error.http_status_code == _NOT_FOUND:
            return None
        raise


def _incompatible_message(schema: AvroSchema, latest: RegisteredSchema) -> str:
    """The registry says only "not compatible"; the local checker says why, against its text."""
    message = (
        f"{schema.subject} v{schema.version}: the registry says it is not compatible with"
        f" registry version {latest.version}"
    )
    try:
        registered = parse_schema(latest.schema.schema_str or "", version=latest.version or 0)
        details = check_backward_compatible(registered, schema)
    except SchemaError:
        details = []
    if details:
        message += " (" + "; ".join(details) + ")"
    return message
