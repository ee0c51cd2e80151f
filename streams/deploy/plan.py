"""What a deployment of a pipeline runs: per stage, its slots, command and stop deadline.

Every target (Kubernetes, compose, systemd) renders the same ``DeployPlan``, so they agree on
the worker command, the slot count of each stage and the time a worker gets to stop.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from streams.exceptions import ConfigError
from streams.pipeline import INTERNAL_TOPICS, Pipeline, TopicSpec
from streams.spec import Component

__all__ = [
    "HEALTH_PORT",
    "MONITOR_PORT",
    "STOP_MARGIN_S",
    "DeployPlan",
    "StagePlan",
    "parse_environment",
    "parse_replicas",
    "plan_deployment",
]

# The port every pod's worker serves /livez and /readyz on (one worker per pod).
HEALTH_PORT = 8080
# `streams monitor`'s default port; KEDA's metrics-api trigger reads /api/scale/<group> there.
MONITOR_PORT = 9308
# Above the drain deadline: the supervisor stops after its workers, closes its stats publisher
# and exits; without the margin a worker still committing at the deadline would be SIGKILLed.
STOP_MARGIN_S = 15
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class StagePlan:
    """One stage (or sink) of the deployment: ``replicas`` workers, slots 0..replicas-1."""

    name: str
    group_id: str
    kind: str  # "stage" or "sink"
    partitions: int  # the most partitions of one input topic: more workers would idle
    replicas: int

    @property
    def slots(self) -> range:
        return range(self.replicas)


@dataclass(frozen=True)
class DeployPlan:
    """A pipeline as deployed: its stages, the worker image, topic durability, stop timing."""

    pipeline: str
    reference: str  # MODULE:PIPELINE, as `streams run` takes it
    image: str
    stages: tuple[StagePlan, ...]
    topics: tuple[TopicSpec, ...]  # the pipeline's topics, then the internal ones
    shutdown_deadline_s: float
    replication_factor: int | None = None
    min_insync_replicas: int | None = None

    @property
    def stop_grace_s(self) -> int:
        """Seconds a worker may take to stop: the drain deadline plus ``STOP_MARGIN_S``."""
        return math.ceil(self.shutdown_deadline_s) + STOP_MARGIN_S

    def run_command(self, stage: StagePlan, *slot_options: str) -> list[str]:
        """``streams run MODULE:PIPELINE --stage S`` and how the worker finds its slot."""
        return ["streams", "run", self.reference, "--stage", stage.name, *slot_options]

    def topics_command(self) -> list[str]:
        """``streams topics create MODULE:PIPELINE`` with the plan's durability options."""
        command = ["streams", "topics", "create", self.reference]
        if self.replication_factor is not None:
            command += ["--replication-factor", str(self.replication_factor)]
        if self.min_insync_replicas is not None:
            command += ["--min-insync-replicas", str(self.min_insync_replicas)]
        return command


def parse_replicas(values: Iterable[str]) -> dict[str, int]:
    """``["enrich=3", ...]`` (``--replicas STAGE=N``) as ``{"enrich": 3}``."""
    found: dict[str, int] = {}
    for value in values:
        stage, sep, count = value.partition("=")
        if not sep or not stage or not count.strip().isdigit():
            raise ConfigError(
                f"--replicas {value!r} is not STAGE=N", hint="write for example --replicas enrich=3"
            )
        found[stage.strip()] = int(count)
    return found


def parse_environment(values: Iterable[str]) -> dict[str, str]:
    """``["PRICING_URL=http://pricing:18090", ...]`` (``--env KEY=VALUE``) as a dict."""
    found: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not _VARIABLE.match(key):
            raise ConfigError(
                f"--env {value!r} is not KEY=VALUE with a variable name as KEY",
                hint="write for example --env PRICING_URL=http://pricing:18090",
            )
        found[key] = text
    return found


def plan_deployment(
    pipeline: Pipeline,
    reference: str,
    *,
    image: str,
    replicas: Mapping[str, int] | None = None,
    shutdown_deadline_s: float = 30.0,
    replication_factor: int | None = None,
    min_insync_replicas: int | None = None,
) -> DeployPlan:
    """The plan of ``pipeline``; a one-line error for a replica count it cannot run.

    Every stage gets one worker unless ``replicas`` says otherwise; a stage cannot have more
    workers than the partitions of its widest input topic (the extra ones would own nothing).
    """
    if not image.strip():
        raise ConfigError("the worker image is empty", hint="give --image NAME:TAG")
    wanted = dict(replicas or {})
    for name in wanted:
        pipeline.component(name)  # an unknown stage: TopologyError naming the stages there are
    partitions = {spec.name: spec.partitions for spec in pipeline.topic_specs()}
    stages = tuple(
        _stage_plan(component, partitions, wanted.get(component.name, 1))
        for component in pipeline.stages
    )
    if min_insync_replicas is not None and replication_factor is not None:
        check_durability(replication_factor, min_insync_replicas)
    return DeployPlan(
        pipeline=pipeline.name,
        reference=reference,
        image=image,
        stages=stages,
        topics=(*pipeline.topic_specs(), *INTERNAL_TOPICS),
        shutdown_deadline_s=shutdown_deadline_s,
        replication_factor=replication_factor,
        min_insync_replicas=min_insync_replicas,
    )


def check_durability(replication_factor: int, min_insync_replicas: int) -> None:
    """Refuse a min.insync.replicas above the replication factor: no write could succeed."""
    if min_insync_replicas > replication_factor:
        raise ConfigError(
            f"--min-insync-replicas {min_insync_replicas} is above --replication-factor "
            f"{replication_factor}: every transactional write would fail with NOT_ENOUGH_REPLICAS",
            hint="give a min.insync.replicas of at most the replication factor (e.g. RF 3, ISR 2)",
        )


def _stage_plan(component: Component, partitions: Mapping[str, int], replicas: int) -> StagePlan:
    widest = max(partitions[topic] for topic in component.inputs)
    if replicas < 1:
        raise ConfigError(
            f"--replicas {component.name}={replicas}: a stage needs at least 1 worker",
            hint=f"give --replicas {component.name}=1 or more",
        )
    if replicas > widest:
        raise ConfigError(
            f"--replicas {component.name}={replicas} is above the {widest} partitions of "
            f"stage {component.name}'s input: {replicas - widest} worker(s) would own nothing",
            hint=f"give --replicas {component.name}={widest} or less, or add partitions first",
        )
    return StagePlan(
        name=component.name,
        group_id=component.group_id,
        kind=component.kind,
        partitions=widest,
        replicas=replicas,
    )
