"""The golden cases: each a `streams` command line and the files it must produce.

Regenerate every golden file after an intended change of the generators with::

    UPDATE_GOLDEN=1 PYTHONPATH=. .venv/bin/pytest tests/unit/deploy/test_golden.py -q

then read the diff (`git diff tests/unit/deploy/golden docker-compose.yml`) before committing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).resolve().parent / "golden"
ORDERS = "streams.examples.orders:pipeline"
IMAGE = "resilient-streams:0.1.0"


@dataclass(frozen=True)
class Case:
    """``args`` of `streams`, writing into ``{out}`` (a folder) or to stdout; compared with
    ``expected`` (a folder, or a file for stdout)."""

    name: str
    args: tuple[str, ...]
    expected: Path

    @property
    def to_stdout(self) -> bool:
        return "{out}" not in self.args


CASES = (
    Case(
        "k8s",
        ("deploy", "k8s", ORDERS, "--image", IMAGE, "--out", "{out}", "--replicas", "enrich=2"),
        GOLDEN / "k8s",
    ),
    Case(
        "k8s-keda-strimzi",
        (
            "deploy",
            "k8s",
            ORDERS,
            "--image",
            IMAGE,
            "--out",
            "{out}",
            "--replicas",
            "enrich=2",
            "--keda",
            "--strimzi",
            "prod",
            "--replication-factor",
            "3",
            "--min-insync-replicas",
            "2",
        ),
        GOLDEN / "k8s-keda-strimzi",
    ),
    Case(
        "systemd",
        ("deploy", "systemd", ORDERS, "--out", "{out}", "--replicas", "enrich=2"),
        GOLDEN / "systemd",
    ),
    Case(
        "strimzi-topics",
        ("topics", "create", ORDERS, "--emit", "strimzi", "--cluster", "prod"),
        GOLDEN / "strimzi-topics.yaml",
    ),
    # the repository's own docker-compose.yml is generated: it must stay what the command writes
    Case(
        "docker-compose.yml",
        (
            "deploy",
            "compose",
            ORDERS,
            "--image",
            "resilient-streams:local",
            "--build",
            ".",
            "--stack",
        ),
        ROOT / "docker-compose.yml",
    ),
)
