"""Strimzi ``KafkaTopic`` resources for every topic of a pipeline, retry, DLQ and internal ones.

The Topic Operator of cluster ``C`` creates and reconciles a ``KafkaTopic`` labelled
``strimzi.io/cluster: C``. A topic name Kubernetes refuses as metadata.name (``_streams.stats``)
gets a valid one (``topic_resource_name``) and keeps its real name in ``spec.topicName``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from streams.deploy.names import topic_resource_name
from streams.pipeline import TopicSpec
from streams.topics import with_durability

__all__ = ["STRIMZI_API_VERSION", "kafka_topics"]

# Strimzi 0.49+ serves kafka.strimzi.io/v1 (the CRD vendored in tests/unit/deploy/schemas)
STRIMZI_API_VERSION = "kafka.strimzi.io/v1"


def kafka_topics(
    specs: Iterable[TopicSpec],
    *,
    cluster: str,
    replication_factor: int | None = None,
    min_insync_replicas: int | None = None,
    labels: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One KafkaTopic per spec; ``replicas`` absent leaves the broker's default in force."""
    resources = []
    for spec in with_durability(list(specs), min_insync_replicas):
        name = topic_resource_name(spec.name)
        body: dict[str, Any] = {}
        if name != spec.name:
            body["topicName"] = spec.name
        body["partitions"] = spec.partitions
        if replication_factor is not None:
            body["replicas"] = replication_factor
        if spec.config:
            body["config"] = dict(sorted(spec.config.items()))
        resources.append(
            {
                "apiVersion": STRIMZI_API_VERSION,
                "kind": "KafkaTopic",
                "metadata": {
                    "name": name,
                    "labels": {"strimzi.io/cluster": cluster, **(labels or {})},
                },
                "spec": body,
            }
        )
    return resources
