"""The exactly-once loop of a redrive or copy task: read a fixed range, write, commit together.

``MoveBatch`` is a ``streams.loop.Batch``: ``WorkerLoop`` drives it over a consumer that
``assign()``s the task's partitions (the task is its own consumer group and the only reader of
it, so there is no rebalance). Each transaction holds what the batch wrote, the task's source
offsets (``send_offsets_to_transaction`` with the task group's metadata) and the task's
progress record in the ledger: after a crash, the committed offsets, the ledger's counters and
the records in the destination agree, and a resume continues exactly after them.

Per record the task's ``decide`` function says: a ``Move`` (written), a skip reason
(counted) or None (not selected). A partition ends at the end offset fixed when the task began.

=====================================  ===================================================
failure                                what happens
=====================================  ===================================================
abortable (a failed delivery)          abort, seek back to the committed offsets, go on
fatal, or an unknown commit outcome    a new producer (same transactional.id), seek back
fenced                                 stop (exit 1): another process took the task's
                                       transactional.id (a second resume of it?); the
                                       ledger shows the task INTERRUPTED, resume it
five failures in a row                 stop: the task is FAILED with the last error
=====================================  ===================================================
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from confluent_kafka import Consumer, Message, TopicPartition

from streams.config import StageSettings
from streams.exceptions import TaskFailedError, TransactionError
from streams.kafka.errors import FENCED_NAMES
from streams.kafka.starts import committed_starts
from streams.kafka.transaction import Transaction
from streams.offsets import OffsetBook
from streams.replay.ledger import CancelWatch, task_key
from streams.replay.rules import Move
from streams.replay.scan import Progress
from streams.replay.task import Status, Task
from streams.spec import REPLAY_LEDGER_TOPIC
from streams.stats import ComponentStats

__all__ = ["Decide", "MoveBatch", "RateLimiter", "now_ms", "start_offsets", "task_offsets"]

log = logging.getLogger("streams.replay")

Decide = Callable[[Message], Move | str | None]

# Consecutive transaction failures after which a task gives up (FAILED) instead of looping.
_MAX_FAILURES = 5
# How long a task waits for stable committed offsets (a killed run's transaction still open):
# the coordinator aborts it within transaction.timeout.ms (60 s by default) and its sweep.
_START_WAIT_S = 90.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class RateLimiter:
    """A token bucket: at most ``rate`` records per second, bursts of at most 50 ms worth."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._burst = max(1.0, rate * 0.05)
        self._tokens = 1.0
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def available(self) -> int:
        self._refill()
        return int(self._tokens)

    def take(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """One record's token, waiting for it if need be."""
        self._refill()
        while self._tokens < 1 - 1e-9:  # a float short of a whole token is one
            sleep(max(1e-6, (1 - self._tokens) / self.rate))
            self._refill()
        self._tokens = max(0.0, self._tokens - 1)


class MoveBatch:
    """The open transaction of a replay task, driven by ``streams.loop.WorkerLoop``."""

    def __init__(
        self,
        *,
        task: Task,
        consumer: Consumer,
        assignment: list[TopicPartition],
        txn: Transaction,
        decide: Decide,
        settings: StageSettings,
        on_done: Callable[[], None],
        limiter: RateLimiter | None = None,
        watch: CancelWatch | None = None,
        progress: Progress,
    ) -> None:
        self.task = task  # as last committed
        self.stats = ComponentStats()
        self.rewind_pending = False
        self.outcome: Status | None = None  # set once the final state is committed
        self._consumer = consumer
        self._txn = txn
        self._decide = decide
        self._settings = settings
        self._on_done = on_done
        self._limiter = limiter
        self._watch = watch
        self._progress = progress
        self._book = OffsetBook()
        self._source = task.source  # the one topic the task reads
        self._ends = {p: end for p, (_start, end) in task.ranges.items()}
        self._assigned = sorted(tp.partition for tp in assignment)
        self._done = set(self._ends) - set(self._assigned)  # nothing left to read there
        self._moved = 0
        self._skipped: Counter[str] = Counter()
        self._batch_began: float | None = None
        self._failures = 0
        self._abandoned = False

    # -- what the loop asks ----------------------------------------------------------------

    def room(self) -> int:
        room = self._settings.batch_max_records - self._book.in_batch
        if self._limiter is not None:
            room = min(room, self._limiter.available())
        return max(1, room)

    def age_s(self) -> float | None:
        return None if self._batch_began is None else time.monotonic() - self._batch_began

    def before_consume(self) -> None:
        self._txn.poll()

    def process(self, messages: list[Message]) -> None:
        self._abandoned = False
        handled = processed = moved = 0
        skipped: Counter[str] = Counter()
        decide, ends, done, book = self._decide, self._ends, self._done, self._book
        source = self._source
        # every record of a task goes through this loop: its state in locals, and what it
        # counted joins the batch's counts once, at the end
        for message in messages:
            p = message.partition() or 0
            offset = message.offset() or 0
            end = ends[p]
            if offset >= end or p in done:
                self._finish_partition(p)
                handled += 1
                continue
            decided = decide(message)
            if isinstance(decided, Move):
                if not self._write(decided):
                    # recovered: the batch is dropped and rewound, its counts with it
                    self.stats.consumed += processed
                    self._progress.advance(handled)
                    return
                moved += 1
            elif decided is not None:
                skipped[decided] += 1
            if self._batch_began is None:
                self._batch_began = time.monotonic()
            book.next[source, p] = offset + 1  # OffsetBook.processed, in place
            processed += 1
            if offset + 1 >= end:
                self._finish_partition(p)
            handled += 1
        book.in_batch += processed
        self.stats.consumed += processed
        self._moved += moved
        self._skipped.update(skipped)
        self._progress.advance(handled)

    def maybe_commit(self, *, force: bool) -> None:
        if self.outcome is not None:
            return
        self._past_end()
        cancelled = self._watch is not None and self._watch.check()
        if cancelled or len(self._done) == len(self._ends):
            if self._commit(Status.CANCELLED if cancelled else Status.COMPLETED):
                self._on_done()
            return
        age = self.age_s()
        if age is None:
            return
        if (
            force
            or self._book.in_batch >= self._settings.batch_max_records
            or age * 1000 >= self._settings.batch_max_ms
        ):
            self._commit(None)

    def finish(self) -> None:
        """Stopping (done, cancelled, or asked to stop): commit; INTERRUPTED if not done."""
        if self.outcome is None:
            self._past_end()
            done = len(self._done) == len(self._ends)
            self._commit(Status.COMPLETED if done else Status.INTERRUPTED)

    def close(self) -> None:
        self._txn.close()
        self._consumer.close()
        if self._watch is not None:
            self._watch.close()

    def on_assign(self, _consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        return  # assign()ed partitions: no rebalance callbacks

    def on_revoke(self, _consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        return

    def on_lost(self, _consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        return

    # -- records ---------------------------------------------------------------------------

    def _write(self, move: Move) -> bool:
        if self._limiter is not None:
            self._limiter.take()
        txn = self._txn
        try:
            if not txn.is_open:
                txn.begin()
            txn.produce(
                move.topic,
                move.value,
                move.key,
                move.headers,
                partition=move.partition,
                timestamp_ms=move.timestamp_ms,
            )
        except TransactionError as error:
            self._recover(error)
            return False
        return True

    def _finish_partition(self, partition: int) -> None:
        if partition not in self._done:
            self._done.add(partition)
            self._consumer.pause([TopicPartition(self._source, partition)])

    def _past_end(self) -> None:
        """Partitions whose position reached their end (what was left were markers)."""
        open_ones = [TopicPartition(self._source, p) for p in self._assigned if p not in self._done]
        if not open_ones:
            return
        for tp in self._consumer.position(open_ones):
            if tp.offset >= self._ends[tp.partition]:
                self._finish_partition(tp.partition)

    # -- commit and recovery ---------------------------------------------------------------

    def _offsets(self) -> dict[tuple[str, int], int]:
        assigned = [TopicPartition(self._source, p) for p in self._assigned]
        offsets = self._book.to_commit(self._consumer.position(assigned))
        return {tp: min(offset, self._ends[tp[1]]) for tp, offset in offsets.items()}

    def _progressed(self, offsets: dict[tuple[str, int], int], status: Status | None) -> Task:
        skipped = Counter(self.task.skipped)
        skipped.update(self._skipped)
        stamp = now_ms()
        final = status in {Status.COMPLETED, Status.CANCELLED}
        return self.task.model_copy(
            update={
                "moved": self.task.moved + self._moved,
                "skipped": dict(skipped),
                "positions": {**self.task.positions, **{p: o for (_t, p), o in offsets.items()}},
                "status": status or Status.RUNNING,
                "updated_ms": stamp,
                "finished_ms": stamp if final else None,
            }
        )

    def _commit(self, status: Status | None) -> bool:
        """Commit the batch with the task's progress; ``status``: the final state, if any.

        False if the transaction failed (it was recovered: aborted and rewound).
        """
        offsets = self._offsets()
        task = self._progressed(offsets, status)
        try:
            if not self._txn.is_open:
                self._txn.begin()
            self._txn.produce(REPLAY_LEDGER_TOPIC, task.to_json(), task_key(task.id), None)
            self._txn.commit(offsets, self._consumer.consumer_group_metadata())
        except TransactionError as error:
            self._recover(error)
            return False
        self.task = task
        self._book.mark_committed(offsets)
        self._moved = 0
        self._skipped.clear()
        self._batch_began = None
        self._failures = 0
        if status is not None:
            self.outcome = status
        return True

    def _recover(self, error: TransactionError) -> None:
        if error.code in FENCED_NAMES:
            raise TaskFailedError(
                f"task {self.task.id} was fenced: another process uses its transactional.id "
                f"{self._txn.transactional_id} (the same task resumed twice, or a second task "
                "on the same source)",
                hint="let the other process finish it (`streams dlq tasks` shows its progress); "
                "nothing was written twice: what this process had not committed was aborted",
                fenced=True,
            ) from error
        self._failures += 1
        if self._failures > _MAX_FAILURES:
            raise TaskFailedError(
                f"task {self.task.id}: {self._failures} transactions failed in a row, the "
                f"last with: {error}",
                hint="check the broker and the destination topic; then resume the task",
            ) from error
        log.warning("replay transaction failed, rewinding: %s", error)
        if error.requires_abort and not error.fatal:
            try:
                self._txn.abort()
            except TransactionError:
                self._txn.reset()
        else:
            self._txn.reset()
        self.rewind()

    def rewind(self, partitions: list[TopicPartition] | None = None) -> None:
        """Drop the open batch and seek every partition back to the committed offsets."""
        self.rewind_pending = False
        self._book.clear_batch()
        self._moved = 0
        self._skipped.clear()
        self._batch_began = None
        assigned = partitions or [TopicPartition(self._source, p) for p in self._assigned]
        self._done = set(self._ends) - set(self._assigned)
        found = task_offsets(self._consumer, self.task, assigned)
        for tp in assigned:
            _start, end = self.task.ranges[tp.partition]
            offset = found[tp.partition]
            if offset >= end:
                self._done.add(tp.partition)
                continue
            self._consumer.resume([TopicPartition(self._source, tp.partition)])
            self._consumer.seek(TopicPartition(self._source, tp.partition, offset))
        log.info("replay task %s rewound to its committed offsets", self.task.id)


def task_offsets(
    consumer: Consumer, task: Task, partitions: list[TopicPartition]
) -> dict[int, int]:
    """Partition -> where the task goes on: its committed offset, else its range's start.

    Read with ``streams.kafka.starts.committed_starts``: only a stable answer counts. A
    partition whose committed offset cannot be read (pending in a killed run's transaction, the
    coordinator moving) waits, then fails the start; it never falls back to the range's start,
    which would move what was moved already again.
    """
    found = committed_starts(consumer, partitions, wait_s=_START_WAIT_S, group_id=task.group or "")
    return {
        tp.partition: max(tp.offset, task.ranges[tp.partition][0])  # OFFSET_BEGINNING < 0
        for tp in found
    }


def start_offsets(consumer: Consumer, task: Task) -> list[TopicPartition]:
    """Where a (resumed) task begins: its group's committed offsets, else its range starts."""
    wanted = [TopicPartition(task.source, p) for p in sorted(task.ranges)]
    found = task_offsets(consumer, task, wanted)
    return [
        TopicPartition(task.source, p, found[p])
        for p, (_start, end) in sorted(task.ranges.items())
        if found[p] < end
    ]
