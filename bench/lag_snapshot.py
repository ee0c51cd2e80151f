"""Time LagMonitor.sample() on 200 groups x 50 partitions against the local broker.

Setup: 20 topics x 50 partitions, 20 records per partition; 10 groups per topic, each with a
committed offset on all 50 partitions (200 groups, 10,000 group-partitions). Half the groups are
caught up, half lag behind at varied offsets, so the time-lag reads have real work to do. The
first (cold) sample reads record timestamps; later ones hit the timestamp cache, as a monitor
polling unchanged commits would. Prints the cold time and the median of 5 warm samples, then
deletes the groups and topics.

    .venv/bin/python bench/lag_snapshot.py [--bootstrap 127.0.0.1:19092]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid

from confluent_kafka import ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streams.config import KafkaSettings
from streams.lag import LagMonitor

TOPICS, PARTITIONS, GROUPS_PER_TOPIC, RECORDS = 20, 50, 10, 20


def main() -> None:  # noqa: C901, PLR0912 - a linear script: set up, measure, clean up
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    args = parser.parse_args()
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    run = uuid.uuid4().hex[:6]
    topics = [f"bench-lag-{run}-{n}" for n in range(TOPICS)]
    groups: list[str] = []
    try:
        for future in admin.create_topics(
            [NewTopic(t, num_partitions=PARTITIONS, replication_factor=1) for t in topics]
        ).values():
            future.result(timeout=120)
        producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 20})
        for topic in topics:
            for partition in range(PARTITIONS):
                for n in range(RECORDS):
                    producer.produce(topic, str(n).encode(), partition=partition)
            producer.poll(0)
        if producer.flush(60):
            raise SystemExit("records left unsent")
        rng = random.Random(7)
        futures = {}
        for topic in topics:
            for g in range(GROUPS_PER_TOPIC):
                group = f"bench-lag-{run}-{topic[-2:].strip('-')}-{g}"
                groups.append(group)
                offsets = [
                    TopicPartition(topic, p, RECORDS if g % 2 == 0 else rng.randrange(0, RECORDS))
                    for p in range(PARTITIONS)
                ]
                futures.update(
                    admin.alter_consumer_group_offsets(
                        [ConsumerGroupTopicPartitions(group, offsets)]
                    )
                )
        for future in futures.values():
            future.result(timeout=60)
        print(f"{len(groups)} groups x {PARTITIONS} partitions over {TOPICS} topics")

        with LagMonitor(KafkaSettings(bootstrap_servers=args.bootstrap)) as monitor:
            started = time.perf_counter()
            sampled = monitor.sample(groups)
            cold = time.perf_counter() - started
            rows = sum(len(g.partitions) for g in sampled)
            read = sum(1 for g in sampled for p in g.partitions if p.lag_seconds_method == "read")
            print(f"cold sample: {cold:.3f} s ({rows} partitions, {read} time lags read)")
            times = []
            for _ in range(5):
                started = time.perf_counter()
                monitor.sample(groups)
                times.append(time.perf_counter() - started)
            print(f"warm samples: {', '.join(f'{t:.3f}' for t in times)} s")
            print(f"median of 5: {statistics.median(times):.3f} s")
            started = time.perf_counter()
            monitor.sample()  # every group on the broker, listed first
            print(f"all groups (ListConsumerGroups first): {time.perf_counter() - started:.3f} s")
    finally:
        if groups:
            for future in admin.delete_consumer_groups(groups).values():
                future.result(timeout=60)
        for future in admin.delete_topics(topics).values():
            future.result(timeout=60)


if __name__ == "__main__":
    main()
