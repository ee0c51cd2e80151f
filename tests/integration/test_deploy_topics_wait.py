"""The generated worker pods wait for their topics: the initContainer's script on the real broker.

The script of ``wait-for-topics`` (``streams topics describe --pipeline ...`` in a loop) keeps
waiting while a topic of the pipeline is missing, and ends once `streams topics create` (the
Job's command, also taken from the generated manifests) has created them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from streams.deploy import KubernetesOptions, kubernetes_manifests, plan_deployment
from tests.integration import cli_pipelines
from tests.integration.conftest import Cluster

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = "tests.integration.cli_pipelines:pipeline"
STILL_WAITING_S = 4
CREATED_WITHIN_S = 30


@pytest.fixture
def names(admin: AdminClient, unique_id: str) -> Iterator[dict[str, str]]:
    env = {
        "TEST_PIPELINE": f"podwait{unique_id}",
        "TEST_INPUT": f"test.podwait.{unique_id}.in",
        "TEST_OUTPUT": f"test.podwait.{unique_id}.out",
    }
    yield env
    doomed = [t for t in admin.list_topics(timeout=30).topics if unique_id in t]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            future.result(timeout=30)


def test_the_wait_for_topics_init_container_waits_until_the_job_created_them(
    cluster: Cluster, names: dict[str, str]
) -> None:
    pipeline = cli_pipelines.declared(
        names["TEST_PIPELINE"], names["TEST_INPUT"], names["TEST_OUTPUT"]
    )
    files = kubernetes_manifests(
        plan_deployment(pipeline, REFERENCE, image="unused:1"), KubernetesOptions()
    )
    pod = files["copy/statefulset.yaml"][0]["spec"]["template"]["spec"]
    wait = pod["initContainers"][0]["command"]
    job = files["topics-job.yaml"][0]["spec"]["template"]["spec"]["containers"][0]["command"]
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        **names,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "STREAMS_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
    }
    waiting = subprocess.Popen(
        wait, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(STILL_WAITING_S)
        assert waiting.poll() is None, "the init container ended while the topics are missing"

        created = subprocess.run(
            job, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
        )
        assert created.returncode == 0, created.stdout + created.stderr

        waiting.wait(timeout=CREATED_WITHIN_S)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    stdout, _ = waiting.communicate()
    assert waiting.returncode == 0
    assert f"waiting for the topics of {REFERENCE}" in stdout
