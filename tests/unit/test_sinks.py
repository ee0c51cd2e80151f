"""streams.sinks against SQLite in a temporary folder, with a scripted stand-in for the consumer."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from streams.codecs import raw, text
from streams.config import StageSettings
from streams.database import _to_pyformat
from streams.exceptions import ConfigError, StageStoppedError
from streams.record import Record
from streams.sinks import (
    Connection,
    Database,
    SinkRunner,
    SinkSettings,
    SinkSpec,
    SinkTransaction,
    ensure_offsets_table,
    read_offsets,
)
from streams.sinks.offsets import OffsetConflictError, store_offset

TOPIC = "numbers"
ROWS_SQL = "CREATE TABLE IF NOT EXISTS rows (n INTEGER NOT NULL, key TEXT, origin TEXT NOT NULL)"


# -- URLs ------------------------------------------------------------------------------------


def test_sqlite_url_follows_sqlalchemy_slashes() -> None:
    assert Database("sqlite:///sink.db").path == Path("sink.db")
    assert Database("sqlite:////var/lib/sink.db").path == Path("/var/lib/sink.db")
    assert Database("sqlite:///sink.db").dialect == "sqlite"


def test_postgres_url_is_passed_to_psycopg_and_redacted_in_logs() -> None:
    database = Database("postgresql+psycopg://app:s3cret@db:5432/shop")

    assert database.dialect == "postgresql"
    assert database.conninfo == "postgresql://app:s3cret@db:5432/shop"
    assert "s3cret" not in repr(database)
    assert Database("postgres://app@db/shop").dialect == "postgresql"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("sink.db", "no scheme"),
        ("mysql://app@db/shop", "unsupported scheme"),
        ("sqlite:///:memory:", "names no SQLite file"),
        ("sqlite://", "names no SQLite file"),
        ("postgresql://", "names no server"),
    ],
)
def test_bad_urls_raise_config_error_with_a_hint(url: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as caught:
        Database(url)
    assert "sqlite:///" in caught.value.hint or "postgresql://" in caught.value.hint


def test_missing_sqlite_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as caught:
        Database(f"sqlite:///{tmp_path}/nowhere/sink.db").connect()
    assert "create the folder" in caught.value.hint


def test_environment_overrides_the_declared_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMS_SINK_DATABASE_URL", f"sqlite:///{tmp_path}/other.db")

    runner = SinkRunner(make_spec(f"sqlite:///{tmp_path}/declared.db", insert_row))

    assert runner.database.path == tmp_path / "other.db"


# -- SQL parameters --------------------------------------------------------------------------


def test_named_parameters_become_pyformat_outside_quotes_casts_and_comments() -> None:
    sql = "SELECT :a, ':b', \"c:d\", x::text, '%' || :e -- :f\n FROM t WHERE y LIKE 'p%' AND z = :g"

    assert _to_pyformat(sql) == (
        "SELECT %(a)s, ':b', \"c:d\", x::text, '%' || %(e)s -- :f\n FROM t WHERE y LIKE 'p%' "
        "AND z = %(g)s"
    )
    assert _to_pyformat("SELECT 5 % :m") == "SELECT 5 %% %(m)s"
    assert _to_pyformat("SELECT $$ :x $$, $q$ :y $q$") == "SELECT $$ :x $$, $q$ :y $q$"


def test_sqlite_connection_runs_named_parameters(db: Connection) -> None:
    db.execute(ROWS_SQL)
    db.begin()
    db.executemany(
        "INSERT INTO rows (n, key, origin) VALUES (:n, :key, 'x')",
        [{"n": 1, "key": "a"}, {"n": 2, "key": "b"}],
    )
    db.commit()

    result = db.execute("SELECT n, key FROM rows WHERE n >= :least ORDER BY n", {"least": 1})

    assert result.rows == [(1, "a"), (2, "b")]


def test_sqlite_runs_in_wal_mode(db: Connection) -> None:
    assert db.execute("PRAGMA journal_mode").rows == [("wal",)]
    assert db.execute("PRAGMA busy_timeout").rows[0][0] > 0


# -- offsets ---------------------------------------------------------------------------------


def test_offsets_table_is_created_with_its_key(db: Connection) -> None:
    ensure_offsets_table(db)
    ensure_offsets_table(db)  # idempotent

    columns = [row[1] for row in db.execute("PRAGMA table_info(streams_sink_offsets)").rows]
    key = [row[1] for row in db.execute("PRAGMA table_info(streams_sink_offsets)").rows if row[5]]
    assert columns == ["group_id", "topic", "partition", "next_offset"]
    assert key == ["group_id", "topic", "partition"]


def test_offsets_are_inserted_then_updated_and_read_per_group(db: Connection) -> None:
    ensure_offsets_table(db)
    store_offset(db, "g1", (TOPIC, 0), 10, expected=None)
    store_offset(db, "g1", (TOPIC, 1), 7, expected=None)
    store_offset(db, "g2", (TOPIC, 0), 99, expected=None)
    store_offset(db, "g1", (TOPIC, 0), 25, expected=10)

    assert read_offsets(db, "g1") == {(TOPIC, 0): 25, (TOPIC, 1): 7}
    assert read_offsets(db, "g2") == {(TOPIC, 0): 99}
    assert read_offsets(db, "g3") == {}


def test_an_offset_moved_by_someone_else_is_a_conflict(db: Connection) -> None:
    ensure_offsets_table(db)
    store_offset(db, "g", (TOPIC, 0), 10, expected=None)

    with pytest.raises(OffsetConflictError):
        store_offset(db, "g", (TOPIC, 0), 30, expected=5)
    with pytest.raises(OffsetConflictError):
        store_offset(db, "g", (TOPIC, 0), 30, expected=None)
    assert read_offsets(db, "g") == {(TOPIC, 0): 10}


# -- the idempotency key ---------------------------------------------------------------------


def test_idempotency_key_uses_the_original_coordinates_when_present() -> None:
    plain = Record(b"v", "k", TOPIC, 2, 41, 0)
    retried = Record(
        b"v",
        "k",
        "numbers.retry.1",
        0,
        7,
        0,
        headers=[
            ("streams.original.topic", b"numbers"),
            ("streams.original.partition", b"2"),
            ("streams.original.offset", b"41"),
        ],
    )

    assert SinkTransaction.idempotency_key(plain) == "numbers/2@41"
    assert SinkTransaction.idempotency_key(retried) == "numbers/2@41"


# -- the runner, with a scripted consumer ----------------------------------------------------


class FakeMessage:
    def __init__(self, partition: int, offset: int, value: bytes | None) -> None:
        self._partition, self._offset, self._value = partition, offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes:
        return f"k{self._offset % 3}".encode()

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)


Step = Callable[["FakeConsumer"], list[FakeMessage]]


class FakeConsumer:
    """Plays ``steps`` one per consume() call; assigns ``partitions`` on the first call."""

    def __init__(self, steps: list[Step], partitions: int = 2) -> None:
        self.steps = list(steps)
        self.partitions = partitions
        self.callbacks: dict[str, Any] = {}
        self.assigned: list[TopicPartition] = []
        self.assign_offsets: dict[int, int] = {}
        self.commits: list[dict[int, int]] = []
        self.synchronous_commits = 0
        self.asked: list[int] = []
        self.seeks: list[tuple[int, int]] = []
        self.closed = False

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        assert topics == [TOPIC]
        self.callbacks = callbacks

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        if not self.callbacks.get("assigned_once"):
            self.callbacks["assigned_once"] = True
            parts = [TopicPartition(TOPIC, p) for p in range(self.partitions)]
            self.callbacks["on_assign"](self, parts)
        self.asked.append(num_messages)
        if not self.steps:
            time.sleep(min(timeout, 0.01))
            return []
        return self.steps.pop(0)(self)

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned.extend(partitions)
        self.assign_offsets.update({tp.partition: tp.offset for tp in partitions})

    def assignment(self) -> list[TopicPartition]:
        return list(self.assigned)

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, -1001) for tp in partitions]

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append({tp.partition: tp.offset for tp in offsets})
        self.synchronous_commits += not asynchronous

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))

    def close(self) -> None:
        self.closed = True


def messages(partition: int, first: int, count: int) -> Step:
    return lambda _consumer: [
        FakeMessage(partition, offset, str(offset).encode())
        for offset in range(first, first + count)
    ]


def insert_row(record: Record[Any], tx: SinkTransaction) -> None:
    tx.execute(
        "INSERT INTO rows (n, key, origin) VALUES (:n, :key, :origin)",
        {"n": int(record.value), "key": record.key, "origin": tx.idempotency_key(record)},
    )


def make_spec(url: str, handler: Callable[[Record[Any], SinkTransaction], None]) -> SinkSpec:
    return SinkSpec(
        pipeline="p",
        name="sink",
        inputs=(TOPIC,),
        input_codec=raw(),
        key_codec=text(),
        database=url,
        handler=handler,
        setup_sql=(ROWS_SQL,),
    )


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/sink.db"


@pytest.fixture
def db(url: str) -> Iterator[Connection]:
    connection = Database(url).connect()
    yield connection
    connection.close()


def make_runner(
    url: str,
    consumer: FakeConsumer,
    monkeypatch: pytest.MonkeyPatch,
    handler: Callable[[Record[Any], SinkTransaction], None] = insert_row,
    batch_max_records: int = 1000,
) -> SinkRunner:
    runner = SinkRunner(
        make_spec(url, handler),
        settings=StageSettings(batch_max_records=batch_max_records, batch_max_ms=60_000),
        sink_settings=SinkSettings(database_url=None),
    )
    monkeypatch.setattr(runner, "_make_consumer", lambda: consumer)
    return runner


def rows(url: str) -> list[tuple[int, str]]:
    with sqlite3.connect(Database(url).path) as connection:
        found = connection.execute("SELECT n, origin FROM rows ORDER BY origin").fetchall()
    connection.close()
    return [(int(n), str(origin)) for n, origin in found]


def offsets(url: str) -> dict[tuple[str, int], int]:
    with Database(url).connect() as connection:
        return read_offsets(connection, "p.sink")


def test_rows_and_offsets_are_committed_together(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = FakeConsumer([messages(0, 0, 3), messages(1, 0, 2)])
    runner = make_runner(url, consumer, monkeypatch)

    runner.run(max_records=5)

    assert len(rows(url)) == 5
    assert offsets(url) == {(TOPIC, 0): 3, (TOPIC, 1): 2}
    assert consumer.commits[-1] == {0: 3, 1: 2}  # the advisory Kafka commit, same offsets
    assert consumer.synchronous_commits == 1  # the last one, at stop, waits for the broker
    assert runner.stats.batches_committed == 1
    assert runner.stats.records_committed == 5
    assert consumer.closed


def test_assignment_starts_at_the_stored_offsets_not_kafkas(
    url: str, db: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_offsets_table(db)
    store_offset(db, "p.sink", (TOPIC, 0), 40, expected=None)
    consumer = FakeConsumer([messages(0, 40, 2), messages(1, 0, 1)])
    runner = make_runner(url, consumer, monkeypatch)

    runner.run(max_records=3)

    assert consumer.assign_offsets == {0: 40, 1: OFFSET_BEGINNING}
    assert offsets(url) == {(TOPIC, 0): 42, (TOPIC, 1): 1}


def test_a_failure_after_the_handler_wrote_leaves_nothing_of_the_batch(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer = FakeConsumer([messages(0, 0, 4)])
    runner = make_runner(url, consumer, monkeypatch, batch_max_records=4)
    written: list[int] = []

    def store_then_fail(connection: Connection, *args: Any, **kwargs: Any) -> None:
        written.append(len(rows_in_transaction(connection)))
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr("streams.sinks.offsets.store_offset", store_then_fail)
    runner.run(max_records=4)

    assert written[0] == 4  # the handler's rows were there, inside the transaction
    assert rows(url) == []
    assert offsets(url) == {}
    assert runner.stats.batches_rolled_back >= 1
    assert (0, OFFSET_BEGINNING) in consumer.seeks  # rewound to the (absent) stored offset


def rows_in_transaction(connection: Connection) -> list[tuple[Any, ...]]:
    return connection.execute("SELECT n FROM rows").rows


def test_handler_failure_commits_the_records_before_it_and_names_the_record(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def fail_on_offset_3(record: Record[Any], tx: SinkTransaction) -> None:
        calls.append(record.offset)
        insert_row(record, tx)  # written, then the handler fails: must not persist
        if record.offset == 3:
            raise ValueError("bad amount")

    consumer = FakeConsumer([messages(1, 0, 2), messages(0, 0, 6)])
    runner = make_runner(url, consumer, monkeypatch, handler=fail_on_offset_3)

    with pytest.raises(StageStoppedError, match=r"ValueError on record numbers/0@3: bad amount"):
        runner.run()

    assert sorted(origin for _, origin in rows(url)) == [
        "numbers/0@0",
        "numbers/0@1",
        "numbers/0@2",
        "numbers/1@0",
        "numbers/1@1",
    ]
    assert offsets(url) == {(TOPIC, 0): 3, (TOPIC, 1): 2}
    assert consumer.closed


def test_undecodable_record_commits_what_precedes_it_and_stops(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad: Step = lambda _consumer: [FakeMessage(0, 2, None)]  # noqa: E731 - a tombstone
    consumer = FakeConsumer([messages(0, 0, 2), bad])
    runner = make_runner(url, consumer, monkeypatch)

    with pytest.raises(StageStoppedError, match=r"cannot decode record numbers/0@2"):
        runner.run()

    assert len(rows(url)) == 2
    assert offsets(url) == {(TOPIC, 0): 2}


def test_a_zombie_batch_is_rolled_back_when_another_worker_moved_the_offset(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def other_worker_commits(_consumer: FakeConsumer) -> list[FakeMessage]:
        with Database(url).connect() as other:
            other.begin()
            store_offset(other, "p.sink", (TOPIC, 0), 10, expected=None)
            other.commit()
        return [FakeMessage(0, offset, str(offset).encode()) for offset in range(3)]

    consumer = FakeConsumer([other_worker_commits], partitions=1)
    runner = make_runner(url, consumer, monkeypatch, batch_max_records=3)

    runner.run(max_records=3)

    assert rows(url) == []
    assert offsets(url) == {(TOPIC, 0): 10}
    assert runner.stats.offset_conflicts == 1
    assert consumer.seeks == [(0, 10)]


def test_revoke_commits_the_open_batch_and_lost_rolls_it_back(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def revoke_partition_1(consumer: FakeConsumer) -> list[FakeMessage]:
        consumer.callbacks["on_revoke"](consumer, [TopicPartition(TOPIC, 1)])
        consumer.assigned = [tp for tp in consumer.assigned if tp.partition != 1]
        return []

    def lose_partition_0(consumer: FakeConsumer) -> list[FakeMessage]:
        consumer.callbacks["on_lost"](consumer, [TopicPartition(TOPIC, 0)])
        consumer.assigned = []
        return []

    consumer = FakeConsumer(
        [
            messages(0, 0, 2),
            messages(1, 0, 2),
            revoke_partition_1,
            messages(0, 2, 3),
            lose_partition_0,
        ]
    )
    runner = make_runner(url, consumer, monkeypatch)

    runner.run(idle_timeout_s=0.3)

    assert offsets(url) == {(TOPIC, 0): 2, (TOPIC, 1): 2}
    assert len(rows(url)) == 4
    assert runner.stats.batches_committed == 1
    assert runner.stats.batches_rolled_back == 1


def test_batches_are_bounded_by_record_count(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = FakeConsumer([messages(0, 0, 5), messages(0, 5, 5)], partitions=1)
    runner = make_runner(url, consumer, monkeypatch, batch_max_records=5)

    runner.run(max_records=10)

    assert runner.stats.batches_committed == 2
    assert [c[0] for c in consumer.commits[:2]] == [5, 10]
    assert max(consumer.asked) <= 5
