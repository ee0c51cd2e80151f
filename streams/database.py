"""SQL databases for sinks: SQLite (embedded default) and PostgreSQL, one small interface.

URLs: ``sqlite:///relative.db``, ``sqlite:////absolute/path.db`` (four slashes),
``postgresql://user@host:5432/db`` (also ``postgres://``, ``postgresql+psycopg://``).
Parameters are always written ``:name`` and passed as a mapping; they are translated for
psycopg (``%(name)s``, literal ``%`` doubled). Text inside quotes, comments and ``::`` casts
is left alone. A bad URL raises ConfigError with a hint.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

from streams.exceptions import ConfigError

if TYPE_CHECKING:
    import sqlite3

    import psycopg

    from streams.record import Record

__all__ = ["Connection", "Database", "Dialect", "Params", "Result", "SinkTransaction"]

log = logging.getLogger("streams.database")

Dialect = Literal["sqlite", "postgresql"]
Params = Mapping[str, Any]


# -- the database ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """What a statement returned: its rows (empty unless it selects) and the rows it changed."""

    rows: list[tuple[Any, ...]]
    rowcount: int


class Database:
    """Where rows and offsets go: ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or
    ``postgresql://user[:password]@host:port/dbname`` (psycopg 3).

    SQLite paths follow SQLAlchemy's convention: three slashes then the path, so an absolute
    path has four. A bad URL raises ConfigError at start-up.
    """

    def __init__(self, url: str, *, sqlite_busy_timeout_ms: int = 30000) -> None:
        self.url = url
        self.sqlite_busy_timeout_ms = sqlite_busy_timeout_ms
        scheme, separator, rest = url.partition("://")
        scheme = scheme.lower().removesuffix("+psycopg")
        if not separator:
            raise ConfigError(
                f"database URL {self.redacted!r} has no scheme",
                hint="write sqlite:///path/to/file.db or postgresql://user@host:5432/db "
                "(in SinkSpec.database or STREAMS_SINK_DATABASE_URL)",
            )
        self.dialect: Dialect
        if scheme == "sqlite":
            path = rest.removeprefix("/")
            if not path or path == ":memory:" or path.startswith("file:"):
                raise ConfigError(
                    f"database URL {self.redacted!r} names no SQLite file",
                    hint="a sink keeps its offsets in the database, so it needs a file: "
                    "sqlite:///sink.db (relative) or sqlite:////var/lib/app/sink.db (absolute)",
                )
            self.dialect = "sqlite"
            self.path = Path(path)
        elif scheme in {"postgresql", "postgres"}:
            if not rest or rest == "/":
                raise ConfigError(
                    f"database URL {self.redacted!r} names no server",
                    hint="write postgresql://user@host:5432/dbname",
                )
            self.dialect = "postgresql"
            self.conninfo = f"postgresql://{rest}"
        else:
            raise ConfigError(
                f"database URL {self.redacted!r}: unsupported scheme {scheme!r}",
                hint="use sqlite:///path/to/file.db or postgresql://user@host:5432/db",
            )

    @property
    def redacted(self) -> str:
        """The URL without its password, for logs and errors."""
        return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", self.url)

    def __repr__(self) -> str:
        return f"Database({self.redacted!r})"

    def connect(self) -> Connection:
        """A new connection in autocommit mode; ``begin()`` opens a transaction."""
        if self.dialect == "sqlite":
            if not self.path.parent.is_dir():
                raise ConfigError(
                    f"SQLite database {self.path}: folder {self.path.parent} does not exist",
                    hint="create the folder, or point the URL at an existing one",
                )
            return Connection(self, sqlite=_connect_sqlite(self.path, self.sqlite_busy_timeout_ms))
        import psycopg  # noqa: PLC0415 - about 10 MiB; loaded only for a PostgreSQL URL

        return Connection(self, postgres=psycopg.connect(self.conninfo, autocommit=True))


def _connect_sqlite(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    import sqlite3  # noqa: PLC0415 - about 1 MiB; a stage worker imports this module, not SQLite

    # isolation_level=None: the module must not open transactions behind our back
    connection = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
    try:
        # WAL: readers (lag tools, the application) do not block the sink's writes, nor it them
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        # FULL: a commit survives a power cut too, not only a process crash (NORMAL in WAL mode
        # may lose the last commits, which would be redone, but the rows may have been read)
        connection.execute("PRAGMA synchronous=FULL")
    except BaseException:
        connection.close()
        raise
    return connection


def _sqlite_execute(connection: sqlite3.Connection, sql: str, params: Params | None) -> Result:
    cursor = connection.execute(sql) if params is None else connection.execute(sql, dict(params))
    try:
        rows = cursor.fetchall() if cursor.description else []
        return Result(rows, cursor.rowcount)
    finally:
        cursor.close()


class Connection:
    """A thin wrapper over sqlite3 or psycopg: ``:name`` parameters, explicit transactions."""

    def __init__(
        self,
        database: Database,
        *,
        sqlite: sqlite3.Connection | None = None,
        postgres: psycopg.Connection[tuple[Any, ...]] | None = None,
    ) -> None:
        self.database = database
        self.dialect: Dialect = database.dialect
        self._sqlite = sqlite
        self._postgres = postgres
        self.in_transaction = False
        # PostgreSQL staging tables for COPY (see write_queued): made and committed, made in
        # the open transaction, refused
        self._staged: set[str] = set()
        self._staging: set[str] = set()
        self._unstageable: set[str] = set()

    def execute(self, sql: str, params: Params | None = None) -> Result:
        """Run one statement; ``:name`` placeholders take their values from ``params``."""
        if self._sqlite is not None:
            return _sqlite_execute(self._sqlite, sql, params)
        assert self._postgres is not None  # noqa: S101 - one of the two is always set
        with self._postgres.cursor() as cursor:
            if params is None:
                cursor.execute(sql)
            else:
                cursor.execute(_to_pyformat(sql), dict(params))
            rows = cursor.fetchall() if cursor.description else []
            return Result(rows, cursor.rowcount)

    def executemany(self, sql: str, params: Iterable[Params]) -> int:
        """Run one statement once per mapping; returns the rows changed (if the driver says)."""
        # a dict is passed as it is (the drivers only read it); other mappings are copied
        values = [p if type(p) is dict else dict(p) for p in params]
        if self._sqlite is not None:
            lite = self._sqlite.executemany(sql, values)
            try:
                return lite.rowcount
            finally:
                lite.close()
        assert self._postgres is not None  # noqa: S101
        with self._postgres.cursor() as cursor:
            cursor.executemany(_to_pyformat(sql), values)
            return cursor.rowcount

    def write_queued(self, sql: str, rows: list[Params]) -> None:
        """Send the rows queued for one statement in the fastest shape that means the same.

        See ``_WriteShape``: positional parameters instead of named ones (the drivers bind a
        tuple faster than they look names up in a dict), and on PostgreSQL an ``INSERT`` of
        parameters only goes through ``COPY`` into a temporary table and one
        ``INSERT ... SELECT``. The tuples are made one at a time as the driver reads them (a
        list of them would be traversed by the garbage collector). A row that lacks a
        parameter fails the write with a ValueError naming it.
        """
        shape = _write_shape(sql, self.dialect)
        values = shape.values(rows)
        try:
            if values is None:
                self.executemany(sql, rows)
            elif self._sqlite is not None:
                self._sqlite.executemany(shape.positional, values).close()
            elif shape.copy is not None and self._staging_ready(shape.copy):
                self._copy_insert(shape.copy, values)
            else:
                assert self._postgres is not None  # noqa: S101
                with self._postgres.cursor() as cursor:
                    cursor.executemany(shape.positional, values)
        except KeyError as missing:
            if values is None:
                raise
            raise ValueError(
                f"a row queued with tx.add() for {sql!r} has no parameter {missing}: "
                "every row needs every :name of its statement"
            ) from missing

    def _staging_ready(self, copy: _CopyInsert) -> bool:
        """The temporary table ``copy`` stages its rows in exists (made now if need be).

        Made once per connection, in a savepoint: a user without the TEMP privilege, or a
        target that cannot be copied from, falls back to ``executemany`` for good.
        """
        if copy.stage in self._staged:
            return True
        if copy.stage in self._unstageable:
            return False
        assert self._postgres is not None  # noqa: S101
        try:
            with self._postgres.transaction(), self._postgres.cursor() as cursor:
                cursor.execute(copy.create_stage)
                cursor.execute(copy.number_stage)
        except Exception as error:  # noqa: BLE001 - any refusal: the plain shape still works
            log.warning("COPY staging unavailable for %s, using executemany: %s", copy.table, error)
            self._unstageable.add(copy.stage)
            return False
        self._staging.add(copy.stage)  # visible after this transaction commits
        return True

    def _copy_insert(self, copy: _CopyInsert, values: Iterator[tuple[Any, ...]]) -> None:
        assert self._postgres is not None  # noqa: S101
        with self._postgres.cursor() as cursor:
            with cursor.copy(copy.copy_sql) as writer:
                write_row = writer.write_row
                for row in values:
                    write_row(row)
            cursor.execute(copy.insert_sql)

    def begin(self) -> None:
        # IMMEDIATE: take SQLite's write lock now, so that a busy database makes begin() wait
        # (busy_timeout) rather than fail at the first write or at commit
        self.execute("BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN")
        self.in_transaction = True

    def commit(self) -> None:
        self.execute("COMMIT")
        self.in_transaction = False
        self._staged |= self._staging
        self._staging.clear()

    def rollback(self) -> None:
        self.in_transaction = False
        self._staging.clear()  # made in the transaction being rolled back: gone with it
        self.execute("ROLLBACK")

    def close(self) -> None:
        """Close; an open transaction is rolled back by the database."""
        if self._sqlite is not None:
            self._sqlite.close()
        if self._postgres is not None:
            self._postgres.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


_TOKENS = re.compile(
    r"""'(?:[^']|'')*'                          # a string literal
      |"(?:[^"]|"")*"                          # a quoted identifier
      |--[^\n]*                                # a line comment
      |/\*.*?\*/                               # a block comment
      |\$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$  # a dollar-quoted string
      |::                                      # a PostgreSQL cast, not a parameter
      |:(?P<name>[A-Za-z_][A-Za-z0-9_]*)       # a parameter
      |%                                       # psycopg's escape character
    """,
    re.VERBOSE | re.DOTALL,
)


@lru_cache(maxsize=512)
def _to_pyformat(sql: str) -> str:
    """``:name`` to psycopg's ``%(name)s``, and ``%`` to ``%%``, outside quotes and comments."""

    def replace(match: re.Match[str]) -> str:
        if match["name"]:
            return f"%({match['name']})s"
        return "%%" if match.group() == "%" else match.group()

    return _TOKENS.sub(replace, sql)


# -- the shapes of queued writes ---------------------------------------------------------------

_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_INSERT_OF_PARAMETERS = re.compile(
    rf"""\s*INSERT\s+INTO\s+(?P<table>{_IDENT}(?:\s*\.\s*{_IDENT})?)
      \s*\((?P<columns>\s*{_IDENT}\s*(?:,\s*{_IDENT}\s*)*)\)
      \s*VALUES\s*\((?P<values>\s*:[A-Za-z_][A-Za-z0-9_]*\s*(?:,\s*:[A-Za-z_][A-Za-z0-9_]*\s*)*)\)
      \s*(?P<conflict>ON\s+CONFLICT\s*(?:\([^()]*\)|ON\s+CONSTRAINT\s+{_IDENT})?\s*DO\s+NOTHING)?
      \s*;?\s*""",
    re.VERBOSE | re.IGNORECASE,
)
_SPLIT_LIST = re.compile(rf"\s*({_IDENT})\s*(?:,|$)")


@dataclass(frozen=True)
class _CopyInsert:
    """``INSERT INTO t (a, b) VALUES (:a, :b) [ON CONFLICT ... DO NOTHING]`` as COPY + INSERT.

    The rows are copied into a temporary table with the target's column types and an
    ordering column, then moved with one ``INSERT ... SELECT ... ORDER BY`` carrying the
    statement's own ``ON CONFLICT`` clause: the same rows win as with one ``INSERT`` per row
    (the first of two conflicting rows), and rules and triggers see an ``INSERT``, as they
    would not with a ``COPY`` into the target itself.
    """

    table: str
    stage: str
    create_stage: str
    number_stage: str
    copy_sql: str
    insert_sql: str


@dataclass(frozen=True)
class _WriteShape:
    """One queued statement, positional: the SQL, the parameter names in order, maybe COPY."""

    positional: str
    names: tuple[str, ...]
    copy: _CopyInsert | None

    def values(self, rows: list[Params]) -> Iterator[tuple[Any, ...]] | None:
        """Each row's parameters as a tuple, made as read; None when sent named."""
        if not self.names:
            return None
        if len(self.names) == 1:
            name = self.names[0]
            return ((row[name],) for row in rows)
        return map(itemgetter(*self.names), rows)


@lru_cache(maxsize=512)
def _write_shape(sql: str, dialect: Dialect) -> _WriteShape:
    names: list[str] = []
    other_placeholder = False

    def replace(match: re.Match[str]) -> str:
        nonlocal other_placeholder
        if match["name"]:
            names.append(match["name"])
            return "?" if dialect == "sqlite" else "%s"
        text = match.group()
        if text == "%":
            return "%%" if dialect == "postgresql" else text
        return text

    positional = _TOKENS.sub(replace, sql)
    outside = _TOKENS.sub(" ", sql)
    if dialect == "sqlite" and any(mark in outside for mark in "?@$"):
        other_placeholder = True  # SQLite's other placeholder forms: leave them to the driver
    if other_placeholder:
        return _WriteShape(sql, (), None)
    copy = _copy_insert(sql, names) if dialect == "postgresql" else None
    return _WriteShape(positional, tuple(names), copy)


def _copy_insert(sql: str, names: list[str]) -> _CopyInsert | None:
    if "--" in sql or "/*" in sql:
        return None
    match = _INSERT_OF_PARAMETERS.fullmatch(sql)
    if match is None:
        return None
    columns = _SPLIT_LIST.findall(match["columns"])
    if len(columns) != len(names) or len(set(names)) != len(names):
        return None
    if any(column.strip('"').lower() == "streams_seq" for column in columns):
        return None  # the stage's own ordering column
    table = match["table"]
    listed = ", ".join(columns)
    stage = f"streams_stage_{hashlib.sha1(f'{table}({listed})'.encode()).hexdigest()[:16]}"  # noqa: S324 - a name, not security
    conflict = f" {match['conflict']}" if match["conflict"] else ""
    # the identifiers are the handler's own statement's, matched above; no value is inlined
    return _CopyInsert(
        table=table,
        stage=stage,
        create_stage=f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} AS "  # noqa: S608
        f"SELECT {listed} FROM {table} WITH NO DATA",
        number_stage=f"ALTER TABLE {stage} ADD COLUMN IF NOT EXISTS streams_seq "
        "bigint GENERATED ALWAYS AS IDENTITY",
        copy_sql=f"COPY {stage} ({listed}) FROM STDIN",
        insert_sql=f"WITH moved AS (DELETE FROM {stage} RETURNING *) "  # noqa: S608
        f"INSERT INTO {table} ({listed}) SELECT {listed} FROM moved ORDER BY streams_seq"
        f"{conflict}",
    )


# -- what a sink handler sees ----------------------------------------------------------------


class SinkTransaction:
    """The batch's database transaction, as a handler sees it: run statements, never commit."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._queued: dict[str, list[Params]] = {}
        self._last_sql: str | None = None  # the statement of the last add() and its rows
        self._last_rows: list[Params] = []

    @property
    def dialect(self) -> Dialect:
        """``sqlite`` or ``postgresql``, for the rare statement that differs between them."""
        return self._connection.dialect

    def execute(self, sql: str, params: Params | None = None) -> Result:
        """Run one statement inside the batch's transaction; write parameters as ``:name``."""
        return self._connection.execute(sql, params)

    def executemany(self, sql: str, params: Iterable[Params]) -> int:
        return self._connection.executemany(sql, params)

    def add(self, sql: str, params: Params) -> None:
        """Queue a write; the queued writes are sent per statement and batch at commit.

        The fast form for inserts: one database round trip per statement and batch instead of
        one per record. The rows go as positional parameters (one ``executemany``); on
        PostgreSQL, a statement of the form ``INSERT INTO t (a, b) VALUES (:a, :b)``, with an
        optional ``ON CONFLICT [...] DO NOTHING``, goes through ``COPY`` into a temporary
        table and one ``INSERT ... SELECT`` in the order the rows were added (several times
        faster; the first of two conflicting rows wins, as with one insert per row). Statement-
        level triggers then fire once per batch rather than once per row.

        Use it for statements that cannot fail for one record alone (``INSERT ... ON CONFLICT
        DO NOTHING``): a failure at flush fails the whole batch, which is rolled back and
        retried, and cannot be pinned on one record as a failing ``execute`` can.
        """
        if sql is not self._last_sql:  # a handler usually adds with one constant statement
            self._last_sql = sql
            self._last_rows = self._queued.setdefault(sql, [])
        self._last_rows.append(params)

    def flush(self) -> None:
        """Send the queued writes (the runner calls this before it commits the batch)."""
        queued, self._queued = self._queued, {}
        self._last_sql, self._last_rows = None, []
        for sql, rows in queued.items():
            self._connection.write_queued(sql, rows)

    @staticmethod
    def idempotency_key(record: Record[Any]) -> str:
        """``topic/partition@offset`` of where the record entered the pipeline.

        The same as ``record.idempotency_key``: a record that came through retry or replay
        topics carries its original coordinates in the ``streams.original.*`` headers, and
        those are used, so the key is the same for every copy of one input. Rows with this key
        as PRIMARY KEY, written with ``INSERT ... ON CONFLICT DO NOTHING``, stay single even
        when a record is replayed.
        """
        return record.idempotency_key
