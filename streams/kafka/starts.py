"""Where a worker starts the partitions it is given: the committed offsets, read by the worker.

A stage worker never lets librdkafka fetch its starting offsets. After a worker is killed with
a transaction open, the offsets that transaction sent are *pending* (KIP-447): the group
coordinator answers the committed-offset fetch with UNSTABLE_OFFSET_COMMIT until the
transaction is aborted (``transaction.timeout.ms`` later) or its transactional.id is reused.
librdkafka 2.16 retries that fetch, but if the consumer's assignment changes while it waits
(another worker joins), the partitions it keeps are started from ``auto.offset.reset`` instead:
offset 0, the whole partition processed again (reproduced with classic and cooperative
assignors; ``tests/integration/test_assignment.py`` holds the real-broker test).

So the worker asks ``committed()`` itself, waits while the answer is not stable, and assigns
every partition at an explicit offset: the committed one, or the beginning where the group
has none (a new group never skips what is already there).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from streams.exceptions import KafkaClientError
from streams.kafka.clients import partition_names

__all__ = ["committed_starts"]

log = logging.getLogger("streams.kafka.starts")

# One committed() request: short, so that a worker waiting for an open transaction says so.
_ASK_S = 5.0
# Between two requests that failed at once (not by timing out).
_PAUSE_S = 0.5


def committed_starts(
    consumer: Consumer, partitions: Iterable[TopicPartition], *, wait_s: float, group_id: str
) -> list[TopicPartition]:
    """``partitions`` at their committed offsets (OFFSET_BEGINNING where none is committed).

    Waits up to ``wait_s`` while the coordinator cannot answer with a stable offset (a stopped
    worker's transaction still open, or the coordinator moving); then raises KafkaClientError,
    and the worker restarts and asks again.
    """
    wanted = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
    if not wanted:
        return []
    deadline = time.monotonic() + wait_s
    said = False
    while True:
        reason: str
        try:
            found = consumer.committed(wanted, timeout=_ASK_S)
        except KafkaException as error:
            reason = str(error.args[0] if error.args else error)
        else:
            failed = [tp for tp in found if tp.error is not None]
            if not failed:
                if said:
                    log.info("committed offsets of %s known; starting", partition_names(wanted))
                return [
                    TopicPartition(
                        tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                    )
                    for tp in found
                ]
            reason = f"{partition_names(failed)}: {failed[0].error}"
        if time.monotonic() >= deadline:
            raise KafkaClientError(
                f"group {group_id}: the committed offsets of {partition_names(wanted)} were not "
                f"known within {wait_s:.0f} s ({reason})",
                hint="check the broker and any transaction left open; the worker restarts and "
                "asks again",
            )
        if not said:
            log.warning(
                "group %s: waiting for the committed offsets of %s (%s): a stopped worker's "
                "transaction holds them until the coordinator aborts it "
                "(transaction.timeout.ms), or the coordinator is away",
                group_id,
                partition_names(wanted),
                reason,
            )
            said = True
        time.sleep(_PAUSE_S)
