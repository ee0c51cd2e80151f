"""What a destination topic accepts, checked before a replay writes a record there.

Two things would make a moved record fail or vanish, and a plan finds both before it runs:

- **too-large**: the record (with its new headers) is over the topic's ``max.message.bytes``;
  the broker would refuse it, and the task's transactions would abort over and over;
- **too-old**: it keeps an original timestamp (``--timestamp original``, or any copy) older
  than the topic's ``retention.ms`` allows (or ``message.timestamp.before.max.ms``): the broker
  would refuse it, or delete it with its segment at the next retention check, minutes later.
  Measured here: records of 2023 redriven with their timestamps into a topic with the default
  7 days were gone from the topic within seconds of the redrive's commit.
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource  # the public re-export is untyped

from streams.config import KafkaSettings
from streams.exceptions import KafkaClientError
from streams.kafka.limits import KAFKA_DEFAULT_MAX_BYTES, TopicLimits, record_size
from streams.replay.rules import Move
from streams.spec import REPLAY_LEDGER_TOPIC

__all__ = ["DestinationLimits"]

_TIMEOUT_S = 30.0
# Room between "older than retention" and the broker's next retention check (5 min default).
_RETENTION_MARGIN_MS = 3_600_000


class DestinationLimits:
    """Size and age limits of each destination topic, read once per topic when first met."""

    def __init__(self, kafka: KafkaSettings, topics: Iterable[str] = ()) -> None:
        self._kafka = kafka
        self.limits = TopicLimits({})
        self._oldest: dict[str, int | None] = {}  # topic -> the oldest age (ms) it keeps
        self._read([*topics, REPLAY_LEDGER_TOPIC])

    def _read(self, topics: list[str]) -> None:
        names = sorted({t for t in topics if t and t not in self._oldest})
        if not names:
            return
        admin = AdminClient(self._kafka.client_config())
        resources = {name: ConfigResource("TOPIC", name) for name in names}
        futures = admin.describe_configs(list(resources.values()), request_timeout=_TIMEOUT_S)
        for name, resource in resources.items():
            try:
                entries = futures[resource].result(timeout=_TIMEOUT_S)
            except KafkaException as error:
                if _missing(error):  # the plan refuses a missing destination, with its name
                    self._oldest[name] = None
                    continue
                raise KafkaClientError(
                    f"cannot read the configuration of {name}: {error}"
                ) from error
            values = {key: entry.value for key, entry in entries.items()}
            self.limits.update(
                {name: int(values.get("max.message.bytes") or KAFKA_DEFAULT_MAX_BYTES)}
            )
            self._oldest[name] = _oldest_kept(values)

    def check(self, move: Move, now_ms: int) -> str | None:
        """``too-large``, ``too-old``, or None when the topic takes ``move`` and keeps it."""
        if move.topic not in self._oldest:
            self._read([move.topic])
        if record_size(move.key, move.value, move.headers) > self.limits.limit(move.topic):
            return "too-large"
        oldest = self._oldest[move.topic]
        stamp = move.timestamp_ms
        if (
            stamp is not None
            and oldest is not None
            and stamp < now_ms - oldest + _RETENTION_MARGIN_MS
        ):
            return "too-old"
        return None


def _missing(error: KafkaException) -> bool:
    found = error.args[0] if error.args else None
    return isinstance(found, KafkaError) and found.code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def _oldest_kept(values: dict[str, str | None]) -> int | None:
    """The age (ms) past which the topic refuses or deletes a record; None: no limit."""
    ages = []
    if "delete" in (values.get("cleanup.policy") or "delete"):
        retention = int(values.get("retention.ms") or -1)
        if retention >= 0:
            ages.append(retention)
    before = int(values.get("message.timestamp.before.max.ms") or -1)
    if 0 <= before < 2**62:
        ages.append(before)
    return min(ages) if ages else None
