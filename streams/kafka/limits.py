"""How large a record each destination topic accepts, and how large a record is on the wire.

A broker refuses a record batch larger than the topic's ``max.message.bytes`` (by default the
broker's ``message.max.bytes``, about 1 MiB), and librdkafka refuses, locally, a record larger
than the producer's own ``message.max.bytes``. A stage reads its topics' limits once at
start-up and checks every record it writes against them *before* producing it, so that a record
that can never be written is routed aside instead of failing the transaction over and over.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource  # the public re-export is untyped

from streams.config import KafkaSettings
from streams.exceptions import KafkaClientError

__all__ = ["RECORD_OVERHEAD_BYTES", "TopicLimits", "read_topic_limits", "record_size"]

# A record alone in a batch: the batch header (61 bytes) plus the record's own framing (about
# 20), with a margin; each header adds its name and value plus a few bytes of lengths.
RECORD_OVERHEAD_BYTES = 128
_HEADER_OVERHEAD_BYTES = 6
# Kafka's default message.max.bytes (1 MiB + 12): what a topic without a setting accepts.
KAFKA_DEFAULT_MAX_BYTES = 1_048_588
_TIMEOUT_S = 30.0


def record_size(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None
) -> int:
    """An upper estimate of a record's size in a batch of its own."""
    size = RECORD_OVERHEAD_BYTES + len(key or b"") + len(value or b"")
    for name, data in headers or ():
        size += len(name) + len(data or b"") + _HEADER_OVERHEAD_BYTES
    return size


@dataclass
class TopicLimits:
    """The largest record (as ``record_size`` counts) each topic accepts.

    ``cap`` (``STREAMS_STAGE_MAX_MESSAGE_BYTES`` when it is set) lowers every topic's limit;
    a topic missing from ``per_topic`` gets Kafka's default.
    """

    per_topic: dict[str, int]
    cap: int | None = None

    def update(self, fresh: Mapping[str, int]) -> None:
        """Limits read again (a topic's max.message.bytes changed while the stage ran)."""
        self.per_topic.update(fresh)

    def limit(self, topic: str) -> int:
        found = self.per_topic.get(topic, KAFKA_DEFAULT_MAX_BYTES)
        return found if self.cap is None else min(found, self.cap)

    def fits(self, topic: str, size: int) -> bool:
        return size <= self.limit(topic)

    @property
    def largest(self) -> int:
        """The producer's ``message.max.bytes``: room for the largest record any topic takes."""
        limits = [self.limit(topic) for topic in self.per_topic] or [self.limit("")]
        return max(limits)

    @property
    def smallest(self) -> int:
        limits = [self.limit(topic) for topic in self.per_topic] or [self.limit("")]
        return min(limits)


def read_topic_limits(kafka: KafkaSettings, topics: Iterable[str]) -> dict[str, int]:
    """``max.message.bytes`` of each topic, from the broker (one DescribeConfigs request)."""
    names = sorted(set(topics))
    if not names:
        return {}
    admin = AdminClient(kafka.client_config())
    resources = {name: ConfigResource("TOPIC", name) for name in names}
    futures = admin.describe_configs(list(resources.values()), request_timeout=_TIMEOUT_S)
    found: dict[str, int] = {}
    for name, resource in resources.items():
        try:
            entries = futures[resource].result(timeout=_TIMEOUT_S)
        except KafkaException as error:
            raise KafkaClientError(
                f"cannot read the configuration of topic {name}: {error}",
                hint="check that the broker answers and that this client may describe topics",
            ) from error
        entry = entries.get("max.message.bytes")
        found[name] = (
            int(entry.value) if entry is not None and entry.value else (KAFKA_DEFAULT_MAX_BYTES)
        )
    return found
