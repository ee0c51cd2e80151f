"""A stand-in for confluent_kafka.Message, and DLQ records in the three header formats."""

from __future__ import annotations

from streams import headers as h

NOW = 1_700_000_000_000
DLQ = "orders.enrich.dlq"


class FakeMessage:
    """The part of confluent_kafka.Message the replay code reads."""

    def __init__(
        self,
        value: bytes | None = b"v",
        *,
        key: bytes | None = b"k",
        topic: str = DLQ,
        partition: int = 1,
        offset: int = 7,
        found: list[tuple[str, bytes | None]] | list[tuple[str, bytes]] | None = None,
        timestamp_ms: int = NOW,
    ) -> None:
        self._value, self._key = value, key
        self._topic, self._partition, self._offset = topic, partition, offset
        self._headers = found
        self._timestamp = timestamp_ms

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]] | list[tuple[str, bytes]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)

    def error(self) -> None:
        return None


def ours(
    *,
    reason: str = "retries-exhausted",
    error_class: str = "streams.exceptions.DependencyUnavailable",
    topic: str = "orders.placed",
    partition: int = 2,
    offset: int = 40,
    count: int | None = None,
    extra: list[tuple[str, bytes]] | None = None,
) -> list[tuple[str, bytes]]:
    """The headers a stage writes on a DLQ record (streams.stage.routing), in its order."""
    found = [
        *(extra or []),
        (h.ORIGINAL_TOPIC, topic.encode()),
        (h.ORIGINAL_PARTITION, str(partition).encode()),
        (h.ORIGINAL_OFFSET, str(offset).encode()),
        (h.ORIGINAL_TIMESTAMP, str(NOW - 60_000).encode()),
    ]
    if count is not None:
        found += [(h.REPLAYED, b"redrive-old"), (h.REPLAY_COUNT, str(count).encode())]
    return [
        *found,
        (h.STAGE, b"orders.enrich"),
        (h.ATTEMPT, b"8"),
        (h.FIRST_FAILURE_MS, str(NOW - 59_000).encode()),
        (h.ERROR_REASON, reason.encode()),
        (h.ERROR_CLASS, error_class.encode()),
        (h.ERROR_MESSAGE, b"pricing: connection refused"),
        (h.ERROR_STACK, b"Traceback ..."),
    ]


def spring(*, partition: int = 3, offset: int = 1234) -> list[tuple[str, bytes]]:
    """Spring Kafka's DeadLetterPublishingRecoverer headers (binary partition and offset)."""
    return [
        ("traceparent", b"00-abc-def-01"),
        ("kafka_dlt-exception-fqcn", b"java.lang.IllegalStateException"),
        ("kafka_dlt-exception-message", b"boom"),
        ("kafka_dlt-original-topic", b"payments"),
        ("kafka_dlt-original-partition", partition.to_bytes(4, "big")),
        ("kafka_dlt-original-offset", offset.to_bytes(8, "big")),
        ("kafka_dlt-original-timestamp", (NOW - 1000).to_bytes(8, "big")),
        ("kafka_dlt-original-consumer-group", b"payments-app"),
    ]


def connect() -> list[tuple[str, bytes]]:
    """Kafka Connect's DLQ context headers (decimal text)."""
    return [
        ("__connect.errors.topic", b"crm.contacts"),
        ("__connect.errors.partition", b"0"),
        ("__connect.errors.offset", b"99"),
        ("__connect.errors.connector.name", b"jdbc-sink"),
        ("__connect.errors.stage", b"VALUE_CONVERTER"),
        ("__connect.errors.exception.class.name", b"org.apache.kafka.connect.errors.DataException"),
        ("__connect.errors.exception.message", b"bad json"),
    ]
