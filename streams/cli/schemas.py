"""`streams schemas check`: the Avro schema files, their evolution, and the registry."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from streams.cli.output import EXIT_CHECK_FAILED, emit_json, fail_cleanly, say
from streams.config import KafkaSettings, SchemaSettings
from streams.exceptions import ConfigError

if TYPE_CHECKING:
    from streams.serde.registry import SchemaCheckReport, SubjectReport

__all__ = ["schemas"]


@click.group()
def schemas() -> None:
    """Check Avro schema files (schemas/<domain>/<record>.v<N>.avsc) and the schema registry."""


@schemas.command()
@click.option(
    "--schemas-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder holding <domain>/<record>.v<N>.avsc files [default: STREAMS_SCHEMAS_DIR, else "
    "./schemas if there is one, else the schemas of the streams checkout: where the codecs "
    "look].",
)
@click.option(
    "--registry",
    "registry_url",
    metavar="URL",
    help="Schema registry URL [default: STREAMS_SCHEMA_REGISTRY_URL, else the local stack's].",
)
@click.option("--no-registry", is_flag=True, help="Check the files only; do not ask a registry.")
@click.option("--register", is_flag=True, help="Register latest versions the registry accepts.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@fail_cleanly
def check(
    schemas_dir: Path | None,
    registry_url: str | None,
    no_registry: bool,
    register: bool,
    as_json: bool,
) -> None:
    """Check names, versions and BACKWARD compatibility; compare latest versions with the registry.

    Exit 3 when a file or a subject has a problem (the registry rejecting a schema included),
    1 when the registry cannot be reached (pass --no-registry to check the files alone).
    """
    if no_registry and (register or registry_url):
        raise click.UsageError("--no-registry cannot be combined with --register or --registry")
    url = None if no_registry else registry_url or KafkaSettings().schema_registry_url
    folder = schemas_dir or SchemaSettings().resolved_schemas_dir()
    if not folder.is_dir():
        raise ConfigError(
            f"no schemas folder at {folder}",
            hint="give --schemas-dir, or set STREAMS_SCHEMAS_DIR to the folder of .avsc files",
        )
    # the registry client (authlib, httpx) takes most of a second to import: only when checking
    from streams.serde.registry import check_schema_dir  # noqa: PLC0415

    report = check_schema_dir(folder, registry_url=url, register=register)
    if as_json:
        emit_json(report.to_dict())
    else:
        _print_report(report)
    if not report.ok:
        sys.exit(EXIT_CHECK_FAILED)


def _print_report(report: SchemaCheckReport) -> None:
    registry = f"registry {report.registry_url}" if report.registry_url else "no registry"
    say(
        f"{report.files} schema file(s), {len(report.subjects)} subject(s) under"
        f" {_relative(report.schemas_dir)}; {registry}"
    )
    for subject in report.subjects:
        say(_subject_line(subject))
        for problem in subject.problems:
            say(f"        - {problem}")
        if subject.registry is not None:
            for problem in subject.registry.problems:
                say(f"        - {problem}")
    for file_problem in report.problems:
        say(f"  FAIL  {file_problem}")
    say("ok" if report.ok else "schema check failed: fix the problems above")


def _relative(folder: str) -> str:
    """``folder`` relative to the working directory when it is inside it (``schemas``)."""
    path = Path(folder)
    try:
        return (
            str(path.resolve().relative_to(Path.cwd().resolve())) if path.is_absolute() else folder
        )
    except ValueError:
        return folder


def _subject_line(subject: SubjectReport) -> str:
    status = "ok  " if subject.ok else "FAIL"
    versions = ",".join(f"v{n}" for n in subject.versions)
    line = f"  {status}  {subject.subject}  {versions}"
    if subject.registry is not None:
        line += f"  registry: {subject.registry.state} ({subject.registry.detail})"
    return line
