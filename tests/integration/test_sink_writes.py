"""Queued sink writes on a real PostgreSQL: COPY into a staging table means what INSERT means."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from streams.database import Connection, Database, SinkTransaction
from tests.integration import postgres

postgres_url = postgres.postgres_url  # the session fixture, visible to this module

TABLE = (
    "CREATE TABLE rows (origin TEXT PRIMARY KEY, n BIGINT NOT NULL, note TEXT, "
    "made TEXT NOT NULL DEFAULT 'default')"
)
INSERT = "INSERT INTO rows (origin, n, note) VALUES (:origin, :n, :note) ON CONFLICT DO NOTHING"
PLAIN_TABLE = "CREATE TABLE events (n BIGINT, note TEXT)"  # no key: duplicates would show
PLAIN_INSERT = "INSERT INTO events (n, note) VALUES (:n, :note)"


@pytest.fixture
def url(postgres_url: str) -> str:
    return postgres.create_database(postgres_url)


@pytest.fixture
def db(url: str) -> Iterator[Connection]:
    connection = Database(url).connect()
    connection.execute(TABLE)
    connection.execute(PLAIN_TABLE)
    yield connection
    connection.close()


def batch(db: Connection, sql: str, rows: list[dict[str, Any]], *, commit: bool = True) -> None:
    db.begin()
    tx = SinkTransaction(db)
    for row in rows:
        tx.add(sql, row)
    tx.flush()
    if commit:
        db.commit()
    else:
        db.rollback()


ROWS = [
    {"origin": "a", "n": 1, "note": "tab\there, newline\nthere, 100% \\ backslash"},
    {"origin": "b", "n": 2, "note": None},
    {"origin": "a", "n": 3, "note": "the later of two conflicting rows"},
    {"origin": "c", "n": 4, "note": "é ünïcode"},
]


def test_copy_writes_the_rows_one_insert_per_row_writes(db: Connection, postgres_url: str) -> None:
    batch(db, INSERT, ROWS)
    assert len(db._staged) == 1  # the COPY path was taken
    copied = db.execute("SELECT origin, n, note, made FROM rows ORDER BY origin").rows
    # the control: the same rows, one INSERT each, on a fresh database
    with Database(postgres.create_database(postgres_url)).connect() as other:
        other.execute(TABLE)
        other.begin()
        for row in ROWS:
            other.execute(INSERT, row)
        other.commit()
        inserted = other.execute("SELECT origin, n, note, made FROM rows ORDER BY origin").rows
    assert copied == inserted
    assert copied[0] == ("a", 1, ROWS[0]["note"], "default")  # the first conflicting row won


def test_a_statement_copy_cannot_mean_is_sent_with_executemany(db: Connection) -> None:
    update = (
        "INSERT INTO rows (origin, n) VALUES (:origin, :n) "
        "ON CONFLICT (origin) DO UPDATE SET n = excluded.n"
    )
    batch(db, update, [{"origin": "a", "n": 1}, {"origin": "a", "n": 2}])
    assert db._staged == set()
    # one statement per row: the second updates the first (one INSERT ... SELECT would fail)
    assert db.execute("SELECT origin, n FROM rows").rows == [("a", 2)]


def test_a_rolled_back_batch_drops_its_staging_table_and_the_next_makes_it_again(
    db: Connection,
) -> None:
    batch(db, PLAIN_INSERT, [{"n": 1, "note": "gone"}], commit=False)
    assert db._staged == set()  # made in the rolled-back transaction
    batch(db, PLAIN_INSERT, [{"n": 2, "note": "x"}, {"n": 3, "note": "y"}])
    batch(db, PLAIN_INSERT, [{"n": 4, "note": "z"}])
    assert len(db._staged) == 1
    # each batch moved only its own rows: the staging table is emptied by the move
    assert db.execute("SELECT n FROM events ORDER BY n").rows == [(2,), (3,), (4,)]


def test_without_the_temp_privilege_the_rows_go_through_executemany(
    db: Connection, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    role = f"sink_{uuid.uuid4().hex[:8]}"
    name = url.rsplit("/", 1)[1]
    db.execute(f"CREATE ROLE {role} LOGIN")
    db.execute(f"REVOKE TEMPORARY ON DATABASE {name} FROM PUBLIC")
    db.execute(f"GRANT INSERT, SELECT ON events TO {role}")
    limited_url = url.replace("://postgres@", f"://{role}@")
    assert limited_url != url
    with Database(limited_url).connect() as limited:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # the control: no TEMP
            limited.execute("CREATE TEMPORARY TABLE probe (n int)")
        with caplog.at_level(logging.WARNING, logger="streams.database"):
            batch(limited, PLAIN_INSERT, [{"n": 1, "note": "a"}, {"n": 2, "note": "b"}])
            batch(limited, PLAIN_INSERT, [{"n": 3, "note": "c"}])
    assert db.execute("SELECT n FROM events ORDER BY n").rows == [(1,), (2,), (3,)]
    warnings = [r for r in caplog.records if "COPY staging unavailable" in r.getMessage()]
    assert len(warnings) == 1  # tried once per connection, then executemany for good
