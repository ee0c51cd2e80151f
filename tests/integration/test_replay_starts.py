"""Where a replay task starts: only at a stable committed offset, never at its range's start.

A task's offsets sent in a transaction that is still open are pending (KIP-447): the
coordinator does not answer a read_committed offset fetch for them until the transaction ends.
The task waits for the answer (and fails with one line if it does not come); it never takes
"no answer" for "nothing committed", which would start at the range's start and move what was
moved already once more.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streams.exceptions import KafkaClientError
from streams.replay import Task, mover
from tests.integration.conftest import Cluster

pytestmark = pytest.mark.integration


@pytest.fixture
def source(cluster: Cluster, admin: AdminClient) -> Iterator[str]:
    name = f"starts-{uuid.uuid4().hex[:10]}"
    for future in admin.create_topics([NewTopic(name, 2, 1)]).values():
        future.result(timeout=30)
    yield name
    for future in admin.delete_topics([name]).values():
        future.result(timeout=30)


def _task(source: str) -> Task:
    group = f"_streams.redrive.{source}"
    return Task(
        id=source,
        kind="redrive",
        pipeline="p",
        stage="p.s",
        source=source,
        destination="input",
        group=group,
        ranges={0: (2, 100), 1: (0, 100)},
    )


def test_a_task_waits_for_offsets_an_open_transaction_holds_and_never_starts_over(
    cluster: Cluster, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = _task(source)
    config = cluster.client_config()
    consumer = Consumer({**config, "group.id": task.group, "isolation.level": "read_committed"})
    producer = Producer({**config, "transactional.id": f"{source}.txn"})
    producer.init_transactions(30)
    wanted = [TopicPartition(source, 0), TopicPartition(source, 1)]
    try:
        # committed: partition 0 at 40; partition 1 nothing (its range's start counts)
        producer.begin_transaction()
        producer.send_offsets_to_transaction(
            [TopicPartition(source, 0, 40)], consumer.consumer_group_metadata()
        )
        producer.commit_transaction(30)
        assert mover.task_offsets(consumer, task, wanted) == {0: 40, 1: 0}

        # pending: 70 sent in a transaction left open (a killed run's)
        producer.begin_transaction()
        producer.send_offsets_to_transaction(
            [TopicPartition(source, 0, 70)], consumer.consumer_group_metadata()
        )
        monkeypatch.setattr(mover, "_START_WAIT_S", 6.0)
        with pytest.raises(KafkaClientError, match="were not known within 6 s"):
            mover.task_offsets(consumer, task, wanted)

        # the control: once the transaction ends, the answer comes, and it is the committed one
        producer.abort_transaction(30)
        assert mover.task_offsets(consumer, task, wanted) == {0: 40, 1: 0}
        assert mover.start_offsets(consumer, task) == [
            TopicPartition(source, 0, 40),
            TopicPartition(source, 1, 0),
        ]
    finally:
        consumer.close()
