"""A throwaway PostgreSQL server for the sink tests, from the server binaries on this machine.

PostgreSQL refuses to run as root, so initdb and pg_ctl run as the ``postgres`` user
(``runuser``) in a temporary folder it owns, listening on 127.0.0.1 at a free port with trust
authentication. Missing binaries fail the test: a sink test that silently skips proves nothing.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from streams.localstack.process import free_port

__all__ = ["PostgresUnavailableError", "create_database", "postgres_server", "postgres_url"]


class PostgresUnavailableError(RuntimeError):
    """The server binaries, runuser or the postgres user are missing, or a command failed."""


def _server_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        raise PostgresUnavailableError(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: install them "
            "(apt-get install postgresql) to run the sink tests against PostgreSQL"
        )
    if shutil.which("runuser") is None:
        raise PostgresUnavailableError(
            "runuser not found: it is needed to start PostgreSQL as the postgres user"
        )
    try:
        subprocess.run(["id", "postgres"], check=True, capture_output=True)
    except subprocess.CalledProcessError as error:
        raise PostgresUnavailableError(
            "no `postgres` user: PostgreSQL refuses to run as root (useradd postgres)"
        ) from error
    return found[-1].parent  # the newest major version


def _as_postgres(*argv: str) -> None:
    result = subprocess.run(
        ["runuser", "-u", "postgres", "--", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise PostgresUnavailableError(
            f"{' '.join(argv[:2])} failed:\n{result.stdout}\n{result.stderr}"
        )


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """``postgresql://postgres@127.0.0.1:PORT/postgres`` of a server that lives for the block.

    Shared by the sink tests (the session fixture below) and bench/sink_throughput.py.
    """
    bin_dir = _server_bin()
    base = Path(tempfile.mkdtemp(prefix="streams-pg-"))
    shutil.chown(base, "postgres", "postgres")
    data, port = base / "data", free_port()
    _as_postgres(
        str(bin_dir / "initdb"),
        "-D",
        str(data),
        "-A",
        "trust",
        "-U",
        "postgres",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",  # a throwaway cluster: durability of its files does not matter
    )
    # fsync off: the tests kill clients, never this server, and it halves commit latency
    options = f"-h 127.0.0.1 -p {port} -k {base} -c fsync=off -c max_connections=50"
    _as_postgres(
        str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-o", options, "-w",
        "start",
    )  # fmt: skip
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A server started for the session; missing binaries fail the test, never skip it."""
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_server())
        except PostgresUnavailableError as error:
            pytest.fail(str(error))
        yield url


def create_database(server_url: str, prefix: str = "sink") -> str:
    """A new, empty database on the server; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")  # a generated name, not input
    return server_url.rsplit("/", 1)[0] + f"/{name}"
