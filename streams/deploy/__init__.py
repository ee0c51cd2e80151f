"""Deployments of a pipeline beyond one machine: Kubernetes, docker compose, systemd.

::

    plan = plan_deployment(pipeline, "shop:pipeline", image="shop:1.0", replicas={"enrich": 3})
    kubernetes_manifests(plan, KubernetesOptions(keda=True))   # path -> resources
    compose_file(plan, ComposeOptions(stack=True))             # the compose document
    systemd_units(plan, SystemdOptions())                      # file name -> unit text

Every target runs each worker on a slot of its own (a StatefulSet ordinal, a compose service,
a systemd instance), so that no two workers share a ``transactional.id``, and creates the
topics in a one-shot step before the workers start. A bad plan (an unknown stage, more
replicas than input partitions) is a one-line ``ConfigError`` or ``TopologyError``.
"""

from __future__ import annotations

from streams.deploy.compose import ComposeOptions, compose_file
from streams.deploy.kubernetes import KubernetesOptions, kubernetes_manifests
from streams.deploy.names import topic_resource_name, workload_name
from streams.deploy.plan import DeployPlan, StagePlan, parse_replicas, plan_deployment
from streams.deploy.render import to_yaml, write_tree
from streams.deploy.resources import WORKER_RESOURCES, Resources
from streams.deploy.strimzi import kafka_topics
from streams.deploy.systemd import NEVER_RESTART_CODES, SystemdOptions, systemd_units

__all__ = [
    "NEVER_RESTART_CODES",
    "WORKER_RESOURCES",
    "ComposeOptions",
    "DeployPlan",
    "KubernetesOptions",
    "Resources",
    "StagePlan",
    "SystemdOptions",
    "compose_file",
    "kafka_topics",
    "kubernetes_manifests",
    "parse_replicas",
    "plan_deployment",
    "systemd_units",
    "to_yaml",
    "topic_resource_name",
    "workload_name",
    "write_tree",
]
