"""A faust agent run as a stage of a pipeline, under our topic contract where faust allows it.

What the adapter does, and what faust leaves it unable to do:

==============================  ============================================================
consumer group                  ``P.S``: the faust app's id must be it (checked at declaration)
topics                          inputs from the agent; changelogs, the assignor topic
                                (``P.S-__assignor-__leader``) and ``P.S.dlq`` are declared, so
                                ``streams topics create`` makes them; faust creates none
outputs in the transaction      faust's ``exactly_once`` sends to the *output* partition's
                                producer, outside any transaction (faust-streaming/faust#177);
                                the adapter routes every send made while processing an event
                                to the producer of the event's source partition, whose
                                transaction faust commits with that partition's offsets
an event whose processing       the raw key and value, with the ``streams.*`` headers of a stage
raises                          (reason from the error, as ``streams.stage.routing`` writes
                                them), go to ``P.S.dlq`` inside the source partition's
                                transaction; faust then acks the event and restarts the agent
delayed retries                 none: faust cannot hold a partition back until a record is due
                                without stalling the agent; redrive the DLQ instead
==============================  ============================================================

The worker refuses to start (exit 5) when the app is not ``exactly_once``, its broker is not
``kafka://`` (the confluent driver drops headers and transactions), faust is outside the
tested range, or a topic is missing. The guarantee this achieves is measured by
``tests/chaos/faust_chaos.py``; README "faust agents" states it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, ClassVar

from confluent_kafka.admin import AdminClient

from streams.config import KafkaSettings, StageSettings
from streams.exceptions import KafkaClientError, TopologyError
from streams.spec import FaustSpec
from streams.stage import routing
from streams.stats import ComponentStats

__all__ = ["FAUST_TESTED", "FaustRunner", "FaustStats", "check_faust"]

log = logging.getLogger("streams.agents")

# faust-streaming versions the adapter and its patches were tested with (its internals change
# between minor versions: TransactionManager.send, Agent._on_error)
FAUST_TESTED = ((0, 15), (0, 16))
_UNPATCHED_ENV = "STREAMS_FAUST_UNPATCHED"  # the chaos control: faust's own sends


@dataclass
class FaustStats(ComponentStats):
    """A faust stage worker's counters (``consumed`` is faust's own count of events)."""

    kind: ClassVar[str] = "faust"

    dead_lettered: int = 0
    dead_letters_lost: int = 0  # raised outside any event: nothing to dead-letter


def check_faust(spec: FaustSpec) -> None:
    """Refuse (``TopologyError``: exit 5) what the adapter cannot honour."""
    found = version("faust-streaming")
    parts = tuple(int(p) for p in found.split(".")[:2] if p.isdigit())
    low, high = FAUST_TESTED
    if not low <= parts < high:
        raise TopologyError(
            f"faust stage {spec.group_id}: faust-streaming {found} is outside the tested "
            f"range >={low[0]}.{low[1]},<{high[0]}.{high[1]}",
            hint="install a tested faust-streaming (pip install 'faust-streaming>=0.15,<0.16')",
        )
    conf = spec.app.conf
    guarantee = str(getattr(conf.processing_guarantee, "value", conf.processing_guarantee))
    if guarantee != "exactly_once":
        raise TopologyError(
            f"faust stage {spec.group_id}: processing_guarantee is {guarantee!r}",
            hint="set processing_guarantee='exactly_once' on the app: the DLQ and the outputs "
            "go into the source partition's transaction",
        )
    schemes = {url.scheme for url in conf.broker}
    if schemes != {"kafka"}:
        raise TopologyError(
            f"faust stage {spec.group_id}: broker driver {sorted(schemes)} is not kafka://",
            hint="use broker='kafka://...': faust's confluent driver drops headers and "
            "transactions",
        )


class FaustRunner:
    """Runs one faust stage in this process (faust's own worker and event loop)."""

    def __init__(
        self,
        spec: FaustSpec,
        *,
        slot: int = 0,
        kafka: KafkaSettings | None = None,
        settings: StageSettings | None = None,
        on_stats: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        check_faust(spec)
        self.spec = spec
        self.slot = slot
        self.kafka = kafka or KafkaSettings()
        self.settings = settings or StageSettings()
        self.stats = FaustStats()
        self._on_stats = on_stats
        self._beat = time.monotonic()
        self._ticked = False
        self._last_stats = 0.0

    @property
    def heartbeat(self) -> float:
        return self._beat

    @property
    def ready(self) -> bool:
        return self._ticked

    def request_stop(self) -> None:
        """faust handles SIGTERM itself (its worker stops the app and commits)."""

    def run(self) -> None:
        self._require_topics()
        import faust  # noqa: PLC0415 - only faust stages load faust

        if os.environ.get(_UNPATCHED_ENV) != "1":
            route_sends_to_source_transaction()
        else:
            log.warning("%s=1: faust's own sends (outside the transaction)", _UNPATCHED_ENV)
        self.spec.agent._on_error = self._dead_letter  # noqa: SLF001 - faust's error hook
        self.spec.app.timer(1.0)(self._tick)
        log.info(
            "faust stage started",
            extra={"stage": self.spec.group_id, "agent": self.spec.agent.name},
        )
        worker = faust.Worker(self.spec.app, loglevel=logging.WARNING, quiet=True)
        worker.execute_from_commandline()

    async def _tick(self) -> None:
        self._beat = time.monotonic()
        self._ticked = True
        if time.monotonic() - self._last_stats >= self.settings.stats_interval_s:
            self._last_stats = time.monotonic()
            self.stats.consumed = int(self.spec.app.monitor.events_total)
            snapshot = self.stats.snapshot(group=self.spec.group_id, slot=self.slot)
            log.info("faust stage stats", extra={"stats": snapshot})
            if self._on_stats is not None:
                self._on_stats(snapshot)

    async def _dead_letter(self, _agent: Any, error: BaseException) -> None:
        """The agent raised: its event goes to P.S.dlq in the source partition's transaction."""
        from faust.streams import current_event  # noqa: PLC0415

        event = current_event()
        if event is None:
            self.stats.dead_letters_lost += 1
            log.error("the agent raised outside any event: nothing to dead-letter: %s", error)
            return
        message = event.message
        routed = routing.route(
            FaustMessage(message),
            error,
            group_id=self.spec.group_id,
            policy=self.spec.retry,
            now_ms=time.time_ns() // 1_000_000,
        )
        app = self.spec.app
        group = app.assignor.group_for_topic(message.topic)
        await app.producer.send(
            routed.topic,
            routed.key,
            routed.value,
            None,
            None,
            routed.headers,
            transactional_id=f"{app.conf.id}-{group}-{message.partition}",
        )
        self.stats.dead_lettered += 1
        log.warning(
            "event dead-lettered",
            extra={
                "record": f"{message.topic}/{message.partition}@{message.offset}",
                "reason": routed.reason,
                "dlq": routed.topic,
            },
        )

    def _require_topics(self) -> None:
        admin = AdminClient(self.kafka.client_config())
        try:
            existing = admin.list_topics(timeout=30).topics
        except Exception as error:
            raise KafkaClientError(f"cannot reach Kafka: {error}") from error
        missing = sorted({*self.spec.inputs, *self.spec.written_topics} - set(existing))
        if missing:
            raise TopologyError(
                f"faust stage {self.spec.group_id}: missing topics {', '.join(missing)}",
                hint=f"create them: streams topics create MODULE:{self.spec.pipeline} (faust "
                "creating its own topics would bypass the declared partitions and config)",
            )


class FaustMessage:
    """A faust ``Message`` seen as ``streams.kafka.messages.MessageLike`` (for routing)."""

    def __init__(self, message: Any) -> None:
        self._m = message

    def topic(self) -> str | None:
        return str(self._m.topic)

    def partition(self) -> int | None:
        return int(self._m.partition)

    def offset(self) -> int | None:
        return int(self._m.offset)

    def key(self) -> bytes | None:
        key: bytes | None = self._m.key
        return key

    def value(self) -> bytes | None:
        value: bytes | None = self._m.value
        return value

    def headers(self) -> Any:
        return self._m.headers

    def timestamp(self) -> tuple[int, int]:
        return (int(self._m.timestamp_type or 0), round(float(self._m.timestamp) * 1000))


_PATCHED: list[bool] = []


def route_sends_to_source_transaction() -> None:
    """Make faust's exactly-once sends join the transaction of the input partition (#177)."""
    if _PATCHED:
        return
    from faust.streams import current_event  # noqa: PLC0415
    from faust.transport.consumer import TransactionManager  # noqa: PLC0415

    shipped = TransactionManager.send

    # the parameters of faust 0.15's TransactionManager.send, which it replaces
    async def send(  # noqa: PLR0917
        self: Any,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
        *,
        transactional_id: str | None = None,
    ) -> Any:
        event = current_event()
        if event is None or transactional_id is not None:
            return await shipped(
                self, topic, key, value, partition, timestamp, headers,
                transactional_id=transactional_id,
            )  # fmt: skip
        source = event.message.tp
        group = self.app.assignor.group_for_topic(source.topic)
        return await self.producer.send(
            topic,
            key,
            value,
            partition,
            timestamp,
            headers,
            transactional_id=f"{self.app.conf.id}-{group}-{source.partition}",
        )

    TransactionManager.send = send  # type: ignore[method-assign]  # the patch itself
    _PATCHED.append(True)
