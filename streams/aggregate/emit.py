"""What an aggregate writes besides routed records: window results, re-keyed records, changelog.

Every write goes into the worker's one open transaction. A write the transaction rejects hands
the error to ``Recovery`` (abort or reset, then rewind) and marks the batch abandoned, like a
plain stage's writer. A window result that can never be written (the ``result`` function or
the output codec fails on it, or it is over its topic's limit) stops the stage (exit code 3):
the window would otherwise be lost, or retried for ever.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import Message

from streams.aggregate.state import PartitionState
from streams.aggregate.stats import AggregateStats
from streams.exceptions import OutputRejectedError, StageStoppedError, TransactionError
from streams.kafka.limits import record_size
from streams.kafka.messages import Origin, origin_of
from streams.kafka.transaction import Transaction
from streams.spec import AggregateSpec
from streams.stage.recovery import Recovery
from streams.stage.serdes import StageSerdes
from streams.stage.writer import TransactionWriter
from streams.windows import Window

__all__ = ["Emitter", "default_result"]


def default_result(key: Any, window: Window, value: Any) -> Any:
    """The output value of an aggregate declared without ``result``."""
    from streams.pipeline import WindowResult  # noqa: PLC0415 - the model lives with the API

    return WindowResult(key=key, start_ms=window.start_ms, end_ms=window.end_ms, value=value)


class Emitter:
    """Produces an aggregate's own records into the open transaction."""

    def __init__(
        self,
        *,
        spec: AggregateSpec,
        serdes: StageSerdes,
        txn: Transaction,
        writer: TransactionWriter,
        recovery: Recovery,
        stats: AggregateStats,
    ) -> None:
        self._spec = spec
        self._serdes = serdes
        self._txn = txn
        self._writer = writer
        self._recovery = recovery
        self._stats = stats
        self._result = spec.result or default_result
        self._changelog = spec.changelog_topic

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, bytes | None]],
        *,
        origin: Origin,
        partition: int | None = None,
    ) -> bool:
        """Produce in the open transaction; False if it failed (recovered, batch abandoned)."""
        try:
            self._txn.produce(topic, value, key, headers, origin=origin, partition=partition)
        except TransactionError as error:
            self._writer.guard.note_failure(origin, error)
            self._recovery.recover(error)
            self._writer.abandoned = True
            return False
        except OutputRejectedError as error:
            raise StageStoppedError(
                f"stage {self._spec.group_id}: a record for {topic} was refused: {error}",
                hint=f"raise max.message.bytes of {topic}; the stage resumes where it stopped",
            ) from error
        return True

    def emit(self, key: bytes, window: Window, value: Any, *, message: Message | None) -> bool:
        """Write one window's value to every output; False if the batch was abandoned.

        ``message``: the record whose fold this update follows (None: a window that closed).
        """
        decoded = self._serdes.key.deserialize(key, topic=self._changelog) if key else None
        origin = origin_of(message) if message is not None else ("", -1, -1)
        for topic, serde in self._serdes.outputs.items():
            try:
                data = serde.serialize(self._result(decoded, window, value), topic=topic)
            except Exception as error:
                raise self._stuck(key, window, f"its result cannot be encoded: {error}") from error
            limit = self._writer.guard.limit(topic)
            if record_size(key, data, []) > limit:
                raise self._stuck(key, window, f"its result is over the {limit} bytes of {topic}")
            if not self.produce(topic, data, key or None, [], origin=origin):
                return False
            self._stats.emitted += 1
            self._stats.produced += 1
        return True

    def changelog(self, partition: int, changes: dict[bytes, bytes | None]) -> bool:
        """The open transaction's state changes of one partition, to its changelog partition."""
        limit = self._writer.guard.limit(self._changelog)
        origin = ("", partition, -1)
        for key, value in changes.items():
            size = len(key) + len(value or b"")
            if size > limit:
                raise self._stuck(key, None, f"its state is {size} bytes, over {limit}")
            if not self.produce(
                self._changelog, value, key, [], origin=origin, partition=partition
            ):
                return False
            self._stats.changelog_records += 1
            self._stats.changelog_bytes += size
        return True

    def _stuck(self, key: bytes, window: Window | None, why: str) -> StageStoppedError:
        where = f" window [{window.start_ms}, {window.end_ms})" if window is not None else ""
        return StageStoppedError(
            f"stage {self._spec.group_id}: key {key!r}{where}: {why}",
            hint="fix the aggregate's result function or output codec (or the topic's "
            "max.message.bytes); the stage resumes at the same records",
        )

    def close_windows(self, states: Iterable[PartitionState]) -> None:
        """Close every window a watermark passed, in the open transaction."""
        for state in states:
            if not state.closing_due:
                continue
            if not self._writer.open():
                return
            for closed in state.close_due():
                self._stats.windows_closed += 1
                if self._spec.emit == "final" and not self.emit(
                    closed.key, closed.window, closed.value, message=None
                ):
                    return
