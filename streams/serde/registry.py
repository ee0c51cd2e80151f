"""Avro schema files against the schema registry: what ``streams schemas check`` reports.

:func:`check_schema_dir` loads every file (``streams.serde.schemas``), checks that each
version can read records written with the previous one (BACKWARD, with the ``avro`` package's
checker, no registry needed), and then compares the latest version of each subject with the
registry, registering it with ``register=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from confluent_kafka.schema_registry import RegisteredSchema, Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from streams.config import KafkaSettings
from streams.exceptions import ConfigError, SchemaError
from streams.serde.schemas import (
    AvroSchema,
    SchemaProblem,
    check_backward_compatible,
    parse_schema,
    scan_schema_dir,
    version_problems,
)

__all__ = [
    "RegistryOutcome",
    "SchemaCheckReport",
    "SubjectReport",
    "check_against_registry",
    "check_schema_dir",
    "registry_client",
]

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


# Over 50 lines: the report is assembled in one pass over the subjects, in the order printed.
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
    groups, scan_problems = scan_schema_dir(root)
    file_count = sum(1 for _ in root.rglob("*.avsc"))
    problems = [p for p in scan_problems if p.subject is None]
    if file_count == 0:
        problems.append(SchemaProblem(f"no .avsc files under {root}: is --schemas-dir right?"))
    local: dict[str, list[str]] = {
        name: version_problems(versions) + [p.message for p in scan_problems if p.subject == name]
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
