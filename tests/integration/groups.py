"""Committing a consumer group's offsets from a test, as an admin would."""

from __future__ import annotations

import time

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

__all__ = ["commit_group_offsets"]


def commit_group_offsets(
    admin: AdminClient | str, group: str, offsets: dict[tuple[str, int], int]
) -> None:
    """Commit ``offsets`` for ``group``, retrying until every partition is committed.

    A coordinator that is loading (a new broker, a busy one) answers with an error per
    partition rather than with an exception, so each partition's error is checked. ``admin``
    may be a bootstrap address: a fresh client is then made for each try (after a broker
    restart the old one may never answer again).
    """
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
    )
    deadline = time.monotonic() + 60
    while True:
        client = AdminClient({"bootstrap.servers": admin}) if isinstance(admin, str) else admin
        try:
            (future,) = client.alter_consumer_group_offsets([request]).values()
            failed = [tp.error for tp in future.result(timeout=10).topic_partitions if tp.error]
        except (KafkaException, TimeoutError) as error:
            failed = [error]
        if not failed:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"cannot commit {offsets} for {group}: {failed}")
        time.sleep(1)
