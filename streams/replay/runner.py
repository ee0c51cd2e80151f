"""Running a redrive or copy task: its clients, its first ledger record, the loop, the outcome.

``run_task`` owns what both kinds share. The task's consumer group (``_streams.redrive.<id>``,
``_streams.copy.<id>``) holds its source offsets; its transactional.id names its *source*
(``_streams.redrive.<dlq>``), so two tasks on one source can never write at once: the second's
``init_transactions`` fences the first. A resumed task gets the same transactional.id, which
aborts whatever the killed process left open before anything else is written.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer

from streams.config import KafkaSettings, StageSettings
from streams.exceptions import StreamsError, TaskFailedError, TransactionError
from streams.kafka.clients import transactional_producer_config
from streams.kafka.transaction import Transaction
from streams.loop import WorkerLoop
from streams.replay.destinations import DestinationLimits
from streams.replay.ledger import CancelWatch, task_key, write_task
from streams.replay.mover import Decide, MoveBatch, RateLimiter, now_ms, start_offsets
from streams.replay.scan import Progress
from streams.replay.task import Status, Task
from streams.spec import REPLAY_LEDGER_TOPIC

__all__ = ["Stopper", "run_task", "task_consumer_config"]

log = logging.getLogger("streams.replay")


class Stopper:
    """Lets a signal handler stop a running task at its next transaction boundary."""

    def __init__(self) -> None:
        self.requested = False
        self._loop: WorkerLoop | None = None

    def attach(self, loop: WorkerLoop) -> None:
        self._loop = loop
        if self.requested:
            loop.request_stop()

    def stop(self) -> None:
        self.requested = True
        if self._loop is not None:
            self._loop.request_stop()


def task_consumer_config(kafka: KafkaSettings, task: Task) -> dict[str, Any]:
    """The task's consumer: its own group, read_committed, offsets only through transactions."""
    assert task.group is not None  # noqa: S101 - redrive and copy tasks have one
    return {
        **kafka.client_config(),
        "group.id": task.group,
        "client.id": task.group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        # drains the range without pausing for each refill of the fetch queue (clients.py)
        "fetch.queue.backoff.ms": 100,
    }


def _begin(txn: Transaction, task: Task, consumer: Consumer) -> None:
    """The task's first transaction: its ledger record (RUNNING), before any record moves."""
    try:
        txn.begin()
        txn.produce(REPLAY_LEDGER_TOPIC, task.to_json(), task_key(task.id), None)
        txn.commit({}, consumer.consumer_group_metadata())
    except TransactionError as error:
        raise TaskFailedError(f"cannot start task {task.id}: {error}") from error


# Over 50 lines: the clients of a task, its start, the loop, and the three ways it ends
# (done, stopped, failed), which must all leave the ledger right.
def run_task(
    task: Task,
    decide: Decide,
    *,
    kafka: KafkaSettings,
    settings: StageSettings,
    limits: DestinationLimits,
    progress: Progress,
    stopper: Stopper | None = None,
) -> Task:
    """Run ``task`` to its end (or a stop request); returns its final state as committed."""
    assert task.transactional_id is not None  # noqa: S101 - redrive and copy tasks have one
    consumer = Consumer(task_consumer_config(kafka, task))
    try:
        txn = Transaction(
            transactional_producer_config(
                kafka,
                settings,
                client_id=f"{task.group}.producer",
                transactional_id=task.transactional_id,
                limits=limits.limits,
            ),
            deadline_s=settings.transaction_deadline_s,
        )
    except BaseException:
        consumer.close()
        raise
    started = task.model_copy(update={"status": Status.RUNNING, "updated_ms": now_ms()})
    loop = WorkerLoop(settings)
    assignment = start_offsets(consumer, started)
    batch = MoveBatch(
        task=started,
        consumer=consumer,
        assignment=assignment,
        txn=txn,
        decide=decide,
        settings=settings,
        on_done=loop.request_stop,
        limiter=RateLimiter(task.rate) if task.rate else None,
        watch=CancelWatch(kafka, task.id),
        progress=progress,
    )
    if stopper is not None:
        stopper.attach(loop)
    progress.start(
        f"{task.kind} {task.id}",
        total=task.to_move + sum(task.skip_planned.values()),
        done=task.moved + sum(task.skipped.values()),
    )
    try:
        try:
            _begin(txn, started, consumer)
        except BaseException:
            batch.close()  # the loop, which closes it otherwise, never started
            raise
        loop.run(consumer, batch, topics=[], emit_stats=lambda: None, assignment=assignment)
    except TaskFailedError as error:
        if not error.fenced:
            _failed(kafka, batch.task, str(error))
        raise
    except StreamsError as error:
        _failed(kafka, batch.task, str(error))
        raise
    finally:
        progress.finish()
    return batch.task


def _failed(kafka: KafkaSettings, task: Task, reason: str) -> None:
    """Record FAILED (outside the broken transaction; what committed stays as it is)."""
    stamp = now_ms()
    failed = task.model_copy(
        update={"status": Status.FAILED, "failure": reason[:1000], "updated_ms": stamp}
    )
    try:
        write_task(kafka, failed)
    except StreamsError:
        log.warning("could not record task %s as FAILED in the ledger", task.id, exc_info=True)
