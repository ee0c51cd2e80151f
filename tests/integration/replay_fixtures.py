"""The replay tests' fixture: a fresh pipeline of ``replay_pipelines`` with its topics."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import Cluster, PipelineTopics
from tests.integration.replay_pipelines import Setup, build

__all__ = ["replay_setup"]


@pytest.fixture
def replay_setup(
    cluster: Cluster, pipeline_topics: PipelineTopics, tmp_path: Path, unique_id: str
) -> Setup:
    """A fresh replay pipeline with its topics (deleted at the end by ``pipeline_topics``)."""
    name = f"rp{unique_id}"
    database = f"sqlite:///{tmp_path / 'rows.db'}"
    built = build(name, database)
    pipeline_topics(built)
    return Setup(name, database, built, cluster.client_config())
