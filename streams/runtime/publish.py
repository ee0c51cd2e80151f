"""Workers and supervisors publish to one compacted topic; the monitor reads them from there.

Topic ``_streams.stats`` (created by ``streams topics create`` with any pipeline), key
``<group>/<slot>``, value one JSON object: the worker's snapshot (``streams.stats``: ``kind``,
``group``, ``slot`` and the counters of its kind), ``ts_ms``, ``pid``, ``host`` and
``dependencies`` (each Dependency's breaker snapshot). The supervisor's records (key
``<group>/supervisor@<host>:<pid>``, ``streams.stats.SupervisorReport``) go through ``send``.
Publishing is best effort: a worker or supervisor never stops or slows down because its
records could not be written; it logs that once.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from streams import dependency
from streams.config import KafkaSettings
from streams.spec import STATS_TOPIC

__all__ = ["STATS_TOPIC", "StatsPublisher"]


log = logging.getLogger("streams.stats")

# What a failed delivery means, by librdkafka's error code: the topic is not there, or the
# broker did not answer (a produce to a broker that is down ends in a timeout).
_NO_TOPIC = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC}  # noqa: SLF001
_UNREACHABLE = {
    KafkaError._MSG_TIMED_OUT,  # noqa: SLF001 - librdkafka's local error codes start with _
    KafkaError._TIMED_OUT,  # noqa: SLF001
    KafkaError._TRANSPORT,  # noqa: SLF001
    KafkaError._ALL_BROKERS_DOWN,  # noqa: SLF001
}
# The metadata request that tells a missing topic from a broker that is down: short, since it
# runs in the worker's loop (once per kind of failure).
_DIAGNOSE_TIMEOUT_S = 2.0


class StatsPublisher:
    """Writes a worker's stats snapshots to ``_streams.stats``."""

    def __init__(
        self,
        kafka: KafkaSettings | None = None,
        *,
        reference: str | None = None,
        topic: str = STATS_TOPIC,
    ) -> None:
        settings = kafka or KafkaSettings()
        self._settings = settings
        self._reference = reference or "MODULE:PIPELINE"
        self._topic = topic
        self._producer = Producer(
            {
                **settings.client_config(),
                "linger.ms": 50,
                # a lost stats record is replaced by the next one: do not hold them for long
                "message.timeout.ms": 10000,
                "on_delivery": self._delivered,
            }
        )
        self._host = socket.gethostname()
        self._warned = False  # a failed produce() call, logged once
        self._warned_about: set[str] = set()  # each kind of failed delivery is logged once
        self._failure: KafkaError | None = None  # a failed delivery not reported yet

    def _delivered(self, error: KafkaError | None, _message: Any) -> None:
        # only noted here: a client call from inside a delivery callback aborts the process
        # (confluent-kafka's CallState assertion), and telling the causes apart needs one
        if error is not None and self._failure is None:
            self._failure = error

    def _report_failure(self) -> None:
        """Log the failed delivery noted since the last call, once per kind, with its hint."""
        error, self._failure = self._failure, None
        if error is None or {"no-topic", "unreachable"} <= self._warned_about:
            return
        kind = self._diagnose(error)
        if kind in self._warned_about:
            return
        self._warned_about.add(kind)
        servers = self._settings.bootstrap_servers
        if kind == "no-topic":
            why = f"topic {self._topic} does not exist at {servers}"
            hint = f"create it: streams topics create {self._reference}"
        elif kind == "unreachable":
            why = f"no answer from Kafka at {servers} ({error.str()})"
            hint = f"{self._settings.reach_hint}; publishing resumes when the broker answers"
        else:
            why, hint = error.str(), ""
        log.warning(
            "cannot publish worker stats to %s: %s (monitoring misses this worker meanwhile)",
            self._topic,
            why,
            extra={"hint": hint} if hint else {},
        )

    def _diagnose(self, error: KafkaError) -> str:
        """``no-topic``, ``unreachable`` or the error's name.

        A record for a topic that does not exist times out like one for a broker that is down
        (the producer waits for the topic to appear), so a timeout is told apart by asking the
        broker about the topic: once per kind of failure, 2 s at most, in the worker's loop.
        """
        code = error.code()
        if code in _NO_TOPIC:
            return "no-topic"
        if code not in _UNREACHABLE:
            return str(error.name())
        try:
            found = self._producer.list_topics(self._topic, timeout=_DIAGNOSE_TIMEOUT_S)
        except KafkaException:
            return "unreachable"
        metadata = found.topics.get(self._topic)
        if metadata is not None and metadata.error is not None:
            return "no-topic" if metadata.error.code() in _NO_TOPIC else "unreachable"
        return "unreachable"

    @classmethod
    def best_effort(cls, kafka: KafkaSettings | None = None) -> StatsPublisher | None:
        """A publisher, or None (logged) when even its producer cannot be built."""
        try:
            return cls(kafka)
        except (KafkaException, ValueError) as error:
            log.warning(
                "cannot publish to %s: %s (monitoring misses this process)", STATS_TOPIC, error
            )
            return None

    def publish(self, snapshot: dict[str, Any]) -> None:
        self._report_failure()  # of an earlier snapshot: here, outside the client's callbacks
        group = snapshot["group"]
        payload = {
            **snapshot,
            "ts_ms": time.time_ns() // 1_000_000,
            "pid": os.getpid(),
            "host": self._host,
            "dependencies": dependency.snapshots(),
        }
        self.send(f"{group}/{snapshot['slot']}", payload)

    def send(self, key: str, value: Mapping[str, Any]) -> None:
        """Queue one record; never blocks and never raises (a full queue drops the record)."""
        try:
            self._producer.produce(
                self._topic, json.dumps(value, default=str).encode(), key=key.encode()
            )
            self._producer.poll(0)
        except (KafkaException, BufferError) as error:
            if not self._warned:
                self._warned = True
                log.warning("cannot publish stats: %s", error)

    def close(self, timeout_s: float = 2.0) -> None:
        """Send what is queued, for at most ``timeout_s`` (a broker that is down costs that)."""
        self._producer.flush(timeout_s)
        self._report_failure()
