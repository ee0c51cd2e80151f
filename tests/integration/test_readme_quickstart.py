"""The README's quickstart, run as written against the real broker, so that it cannot drift.

The section "Quickstart: a pipeline of your own" is read from README.md. Each fenced block whose
info string names a file (```` ```python shop.py ````) is written to that file in an empty
folder; each ```` ```bash ```` block is run there, in order, by ``bash -euo pipefail`` with the
virtual environment's ``bin`` first on PATH (as after ``. .venv/bin/activate``); a
```` ```text ```` block right after a bash block is what that block prints (stdout and stderr).

The comparison masks what differs from run to run and nothing else: times (ISO and ms since
the epoch), the file paths inside ``streams.error.stack``, the registry's address when the
session's is not the local stack's, the ``_streams.stats`` line (printed by the first
``topics create`` on a cluster only), and the order of records read from different
partitions (each record is compared whole, with its headers).

The quickstart's names are fixed (pipeline ``shop``): its topics, consumer group and schema
subject are deleted before the run and its topics and group after it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from tests.integration.conftest import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Quickstart: a pipeline of your own"
TOPICS = [
    "shop.orders",
    "shop.accepted",
    "shop.accept.retry.5s",
    "shop.accept.retry.30s",
    "shop.accept.retry.5m",
    "shop.accept.dlq",
]
GROUP = "shop.accept"
SUBJECT = "shop.OrderAccepted"
README_REGISTRY = "http://127.0.0.1:18081/apis/ccompat/v7"
_FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
_MASKS = (
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"), "<time>"),
    (re.compile(r"\b\d{13}\b"), "<ms>"),
    (re.compile(r"(streams\.error\.stack: ).*"), r"\1<stack>"),
)


@dataclass(frozen=True)
class Block:
    info: str
    body: str

    @property
    def language(self) -> str:
        return self.info.split()[0] if self.info else ""

    @property
    def file(self) -> str | None:
        parts = self.info.split()
        return parts[1] if len(parts) > 1 else None


def quickstart_blocks() -> list[Block]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else len(text)]
    return [Block(match.group(1).strip(), match.group(2)) for match in _FENCE.finditer(section)]


def _records(text: str, registry_url: str) -> list[str]:
    """The output as whole records (a line and the indented lines under it), masked, sorted."""
    text = text.replace(registry_url, README_REGISTRY)
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    chunks: list[list[str]] = []
    for line in text.splitlines():
        if "_streams.stats" in line or not line.strip():
            continue
        if line.startswith(" ") and chunks:
            chunks[-1].append(line)
        else:
            chunks.append([line])
    return sorted("\n".join(chunk) for chunk in chunks)


def _delete_leftovers(admin: AdminClient, cluster: Cluster) -> None:
    existing = admin.list_topics(timeout=30).topics
    doomed = [name for name in TOPICS if name in existing]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            future.result(timeout=30)
    with contextlib.suppress(Exception):  # no such group: nothing to delete
        admin.delete_consumer_groups([GROUP])[GROUP].result(timeout=30)


def _delete_subject(cluster: Cluster) -> None:
    for suffix in ("", "?permanent=true"):
        request = urllib.request.Request(  # noqa: S310 - the session registry's http URL
            f"{cluster.schema_registry_url}/subjects/{SUBJECT}{suffix}", method="DELETE"
        )
        with contextlib.suppress(OSError):  # 404: not registered
            urllib.request.urlopen(request, timeout=10).close()  # noqa: S310


@pytest.fixture
def shop(cluster: Cluster, admin: AdminClient) -> Iterator[None]:
    _delete_leftovers(admin, cluster)
    _delete_subject(cluster)
    yield
    _delete_leftovers(admin, cluster)


def _run_bash(script: str, folder: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its background jobs too can be killed as one group
    ) as process:
        try:
            output, _ = process.communicate(timeout=180)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # a `&` job left behind by a failure
    return subprocess.CompletedProcess(script, process.returncode, output, "")


def test_the_readme_quickstart_runs_as_written_and_prints_what_it_shows(
    cluster: Cluster, shop: None, tmp_path: Path
) -> None:
    blocks = quickstart_blocks()
    files = [block for block in blocks if block.file]
    assert [block.file for block in files] == [
        "schemas/shop/order_accepted.v1.avsc",
        "shop.py",
        "orders.txt",
    ]
    for block in files:
        assert block.file is not None
        path = tmp_path / block.file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.body, encoding="utf-8")

    scripts = 0
    for index, block in enumerate(blocks):
        if block.language != "bash" or block.file:
            continue
        scripts += 1
        done = _run_bash(block.body, tmp_path)
        assert done.returncode == 0, f"block {scripts}:\n{block.body}\n---\n{done.stdout}"
        shown = blocks[index + 1] if index + 1 < len(blocks) else None
        if shown is not None and shown.language == "text" and not shown.file:
            assert _records(done.stdout, cluster.schema_registry_url) == _records(
                shown.body, cluster.schema_registry_url
            ), f"block {scripts} printed:\n{done.stdout}"
    assert scripts == 2
    # the workers stopped on the SIGTERM of `kill %1`: drained and committed, said so
    assert "stopped cleanly" in (tmp_path / "workers.log").read_text()
