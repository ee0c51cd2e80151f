"""Fixtures of the integration tests: the client environment, topic and pipeline factories.

The session's broker and registry (``cluster``, ``admin``) come from ``tests/cluster.py``,
registered once in ``tests/conftest.py`` so that every test folder shares one cluster.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streams.config import KafkaSettings
from streams.pipeline import Pipeline
from streams.topics import ensure_topics
from tests.cluster import Cluster

__all__ = ["Cluster", "PipelineTopics", "TopicFactory"]


@pytest.fixture(autouse=True, scope="session")
def _client_environment(cluster: Cluster) -> Iterator[None]:
    """Subprocesses (`streams ...`) started by tests talk to the same cluster."""
    saved = {
        k: os.environ.get(k) for k in ("STREAMS_BOOTSTRAP_SERVERS", "STREAMS_SCHEMA_REGISTRY_URL")
    }
    os.environ["STREAMS_BOOTSTRAP_SERVERS"] = cluster.bootstrap_servers
    os.environ["STREAMS_SCHEMA_REGISTRY_URL"] = cluster.schema_registry_url
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


TopicFactory = Callable[..., str]


@pytest.fixture
def topic_factory(admin: AdminClient, request: pytest.FixtureRequest) -> Iterator[TopicFactory]:
    """Create topics with unique names for one test; they are deleted when the test ends."""
    created: list[str] = []

    def create(
        prefix: str = "t", *, partitions: int = 1, config: dict[str, str] | None = None
    ) -> str:
        test_name = request.node.name.replace("[", "-").replace("]", "")[:40]
        name = f"test.{test_name}.{prefix}.{uuid.uuid4().hex[:8]}"
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})]
        )
        futures[name].result(timeout=30)
        created.append(name)
        return name

    yield create
    if created:
        for future in admin.delete_topics(created).values():
            future.result(timeout=30)


@pytest.fixture
def unique_id() -> str:
    return uuid.uuid4().hex[:10]


PipelineTopics = Callable[[Pipeline], list[str]]


@pytest.fixture
def pipeline_topics(cluster: Cluster, admin: AdminClient) -> Iterator[PipelineTopics]:
    """Create every topic of a pipeline (inputs, outputs, retry tiers, DLQ); delete at the end."""
    created: list[str] = []

    def create(pipeline: Pipeline) -> list[str]:
        report = ensure_topics(
            pipeline, kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers)
        )
        created.extend(report.created)
        return [spec.name for spec in pipeline.topic_specs()]

    yield create
    if created:
        for future in admin.delete_topics(created).values():
            future.result(timeout=30)
