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

from confluent_kafka import KafkaException, Producer

from streams import dependency
from streams.config import KafkaSettings
from streams.spec import STATS_TOPIC

__all__ = ["STATS_TOPIC", "StatsPublisher"]


log = logging.getLogger("streams.stats")


class StatsPublisher:
    """Writes a worker's stats snapshots to ``_streams.stats``."""

    def __init__(self, kafka: KafkaSettings | None = None) -> None:
        settings = kafka or KafkaSettings()
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
        self._warned = False

    def _delivered(self, error: Any, _message: Any) -> None:
        if error is not None and not self._warned:
            self._warned = True
            log.warning(
                "cannot publish worker stats to %s: %s (monitoring misses this worker)",
                STATS_TOPIC,
                error,
                extra={"hint": "run `streams topics create MODULE:PIPELINE` to create it"},
            )

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
                STATS_TOPIC, json.dumps(value, default=str).encode(), key=key.encode()
            )
            self._producer.poll(0)
        except (KafkaException, BufferError) as error:
            if not self._warned:
                self._warned = True
                log.warning("cannot publish stats: %s", error)

    def close(self, timeout_s: float = 2.0) -> None:
        """Send what is queued, for at most ``timeout_s`` (a broker that is down costs that)."""
        self._producer.flush(timeout_s)
