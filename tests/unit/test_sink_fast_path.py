"""The sink's fast path: records built like decode_message builds them, queued writes positional."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from streams import database as database_module
from streams.database import Connection, Database, SinkTransaction
from streams.exceptions import SerializationError
from streams.kafka.messages import decode_message
from streams.record import Record
from streams.serde import BytesSerde, JsonSerde, Serde, StringSerde
from streams.sinks import records as records_module
from streams.sinks.records import record_maker


class Message:
    """The part of confluent_kafka.Message a sink reads."""

    def __init__(
        self,
        value: Any,
        key: Any = b"k1",
        headers: Any = None,
        *,
        topic: str = "orders",
        partition: int = 3,
        offset: int = 41,
    ) -> None:
        self._value, self._key, self._headers = value, key, headers
        self._topic, self._partition, self._offset = topic, partition, offset

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> Any:
        return self._key

    def value(self) -> Any:
        return self._value

    def headers(self) -> Any:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_123)


class Order(BaseModel):
    sku: str
    total: int


RETRIED = [
    ("streams.original.topic", b"orders"),
    ("streams.original.partition", b"0"),
    ("streams.original.offset", b"7"),
    ("app", "text"),
]

CASES: list[tuple[str, Serde[Any], Serde[Any], Message]] = [
    ("raw value, text key", StringSerde(), BytesSerde(), Message(b"v")),
    ("no key", StringSerde(), BytesSerde(), Message(b"v", key=None)),
    ("headers", StringSerde(), BytesSerde(), Message(b"v", headers=RETRIED)),
    ("text value, raw key", BytesSerde(), StringSerde(), Message("é".encode())),
    ("json value", StringSerde(), JsonSerde(Order), Message(b'{"sku":"a","total":3}')),
    ("bytearray value", StringSerde(), BytesSerde(), Message(bytearray(b"v"))),
]


@pytest.mark.parametrize(
    ("key", "value", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_built_record_equals_decode_messages(
    key: Serde[Any], value: Serde[Any], message: Message
) -> None:
    expected = decode_message(message, key=key, value=value)
    built = record_maker(key, value)(message)
    if built is None:  # the general path: the caller decodes with decode_message
        assert type(message.value()) is not bytes
        return
    assert type(built) is Record
    assert built == expected
    assert built.idempotency_key == expected.idempotency_key
    assert built.headers == expected.headers


REJECTED: list[tuple[str, Serde[Any], Serde[Any], Message]] = [
    ("tombstone", StringSerde(), BytesSerde(), Message(None)),
    ("key not UTF-8", StringSerde(), BytesSerde(), Message(b"v", key=b"\xff")),
    ("value not UTF-8", StringSerde(), StringSerde(), Message(b"\xff")),
    ("invalid JSON", StringSerde(), JsonSerde(Order), Message(b'{"sku":"a"}')),
]


@pytest.mark.parametrize(
    ("key", "value", "message"), [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED]
)
def test_a_record_the_codecs_reject_is_left_to_decode_message(
    key: Serde[Any], value: Serde[Any], message: Message
) -> None:
    assert record_maker(key, value)(message) is None
    with pytest.raises(SerializationError):  # the control: decode_message does reject it
        decode_message(message, key=key, value=value)


def test_a_changed_record_shape_falls_back_to_the_constructor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert records_module._record_builder() is not Record  # the slot builder is in use
    monkeypatch.setattr(records_module, "_FIELDS", ("value", "key", "topic"))
    assert records_module._record_builder() is Record
    built = record_maker(StringSerde(), BytesSerde())(Message(b"v"))
    assert built == decode_message(Message(b"v"), key=StringSerde(), value=BytesSerde())


# -- queued writes ---------------------------------------------------------------------------

ROWS = "CREATE TABLE rows (origin TEXT PRIMARY KEY, n BIGINT NOT NULL, note TEXT)"
INSERT = "INSERT INTO rows (origin, n) VALUES (:origin, :n) ON CONFLICT DO NOTHING"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Connection]:
    connection = Database(f"sqlite:///{tmp_path}/writes.db").connect()
    connection.execute(ROWS)
    yield connection
    connection.close()


def flushed(db: Connection, statements: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    db.begin()
    tx = SinkTransaction(db)
    for sql, params in statements:
        tx.add(sql, params)
    tx.flush()
    db.commit()
    return db.execute("SELECT origin, n, note FROM rows ORDER BY origin").rows


def test_queued_rows_are_written_positionally_first_conflicting_row_winning(
    db: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    named: list[str] = []
    monkeypatch.setattr(Connection, "executemany", lambda _self, sql, _rows: named.append(sql))
    rows = flushed(
        db,
        [
            (INSERT, {"origin": "a", "n": 1}),
            ("UPDATE rows SET note = :note WHERE n = :n", {"note": "x:y", "n": 1}),
            (INSERT, {"origin": "a", "n": 2}),
            (INSERT, {"n": 3, "origin": "b", "unused": 0}),
        ],
    )
    assert rows == [("a", 1, "x:y"), ("b", 3, None)]
    assert named == []  # no statement went through the named executemany


def test_a_row_missing_a_parameter_fails_the_write_naming_it(db: Connection) -> None:
    with pytest.raises(ValueError, match=r"has no parameter 'n'"):
        flushed(db, [(INSERT, {"origin": "a", "n": 1}), (INSERT, {"origin": "b"})])
    db.rollback()
    # the control: the driver's own executemany refuses the same rows
    with pytest.raises(sqlite3.ProgrammingError, match="binding"):
        db.executemany(INSERT, [{"origin": "a", "n": 1}, {"origin": "b"}])


def test_sqlites_other_placeholders_are_left_to_the_driver(db: Connection) -> None:
    shape = database_module._write_shape("INSERT INTO rows (origin, n) VALUES (@o, :n)", "sqlite")
    assert shape.names == ()  # sent named, as written
    assert flushed(db, [("INSERT INTO rows (origin, n) VALUES (@o, :n)", {"o": "a", "n": 1})]) == [
        ("a", 1, None)
    ]


def test_shapes_of_queued_statements() -> None:
    sqlite = database_module._write_shape(
        "INSERT INTO t (a, b) VALUES (:a, ':b' || :b) -- :c", "sqlite"
    )
    assert (sqlite.positional, sqlite.names) == (
        "INSERT INTO t (a, b) VALUES (?, ':b' || ?) -- :c",
        ("a", "b"),
    )
    postgres = database_module._write_shape(
        'INSERT INTO s."T" (a, "b c") VALUES (:a, :b) ON CONFLICT (a) DO NOTHING', "postgresql"
    )
    assert postgres.positional == (
        'INSERT INTO s."T" (a, "b c") VALUES (%s, %s) ON CONFLICT (a) DO NOTHING'
    )
    assert postgres.copy is not None
    assert postgres.copy.copy_sql.endswith(' (a, "b c") FROM STDIN')
    assert postgres.copy.insert_sql.endswith(
        'INSERT INTO s."T" (a, "b c") SELECT a, "b c" FROM moved ORDER BY streams_seq '
        "ON CONFLICT (a) DO NOTHING"
    )
    for not_copied in (
        "INSERT INTO t (a, b) VALUES (:a, :b) ON CONFLICT (a) DO UPDATE SET b = excluded.b",
        "INSERT INTO t (a, b) VALUES (:a, lower(:b))",
        "INSERT INTO t (a, b) VALUES (:a, :a)",
        "INSERT INTO t (a, b) VALUES (:a, :b) RETURNING a",
        "INSERT INTO t (a, streams_seq) VALUES (:a, :b)",
        "UPDATE t SET b = :b WHERE a = :a",
    ):
        shape = database_module._write_shape(not_copied, "postgresql")
        assert shape.copy is None, not_copied
        assert shape.names  # still positional


@pytest.mark.parametrize(
    "message",
    [Message(b"v"), Message(b"v", key=None), Message(b"v", headers=RETRIED)],
    ids=["plain", "no key", "headers"],
)
def test_a_kept_record_is_rebuilt_equal_to_the_first(message: Message) -> None:
    make = record_maker(StringSerde(), BytesSerde())
    first = make(message)
    assert first is not None
    kept: records_module.Kept = (
        message.topic(),
        message.partition(),
        first.offset,
        message.key(),
        message.value(),
        first.timestamp_ms,
        first.headers,
    )
    again = make(records_module.KeptMessage(kept))
    assert again == first
    assert again is not None
    assert again.idempotency_key == first.idempotency_key
    assert again.idempotency_key != again.coordinates or not message.headers()
