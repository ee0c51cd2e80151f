"""Kubernetes manifests of a pipeline: per stage a StatefulSet whose pod ordinal is the slot.

Per stage ``S`` of pipeline ``P`` (files under ``S/``):

- ``statefulset.yaml``: pods ``P-S-0``, ``P-S-1``, ... each running `streams run ... --stage S
  --slot-from-hostname`, so a restarted pod keeps its slot and its ``transactional.id``: it
  aborts its predecessor's open transaction at once and read_committed readers do not stall
  for ``transaction.timeout.ms``. ``podManagementPolicy: Parallel`` starts and stops pods
  together (an ordered rollout would wait for each pod's readiness before the next one starts);
- ``service.yaml``: the headless Service the StatefulSet needs (``serviceName``);
- ``pdb.yaml``: a PodDisruptionBudget of one pod at a time (a voluntary eviction costs one
  rebalance, never all the stage's workers at once);
- ``scaledobject.yaml`` (``keda``): a KEDA ScaledObject on ``streams monitor``'s
  ``/api/scale/<group>``, between the plan's replicas and the input partition count.

Beside them: ``config.yaml`` (a ConfigMap of the connection settings), ``topics-job.yaml``
(a Job running `streams topics create`; with ``strimzi_cluster``, ``topics.yaml`` of KafkaTopic
resources instead) and ``monitor.yaml`` (`streams monitor`, a Deployment and its Service).
Every worker pod waits in an initContainer until every topic of the pipeline exists, so the
order in which the files are applied does not matter.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from streams.deploy.names import resource_name, workload_name
from streams.deploy.plan import HEALTH_PORT, MONITOR_PORT, DeployPlan, StagePlan
from streams.deploy.resources import WORKER_RESOURCES, Resources
from streams.deploy.strimzi import kafka_topics

__all__ = ["KubernetesOptions", "kubernetes_manifests"]

Manifest = dict[str, Any]

_HEALTH = "health"
# Seconds between two looks of KEDA at /api/scale, and before it scales a stage back in.
_KEDA_POLLING_S = 15
_KEDA_COOLDOWN_S = 300
# One pod less per minute at most: each departure is a rebalance of the stage's group.
_SCALE_DOWN_PERIOD_S = 60
# A pod joins its group, fetches its schemas and initialises its producer within two minutes
# on a healthy cluster; liveness is checked only after that (startupProbe).
_STARTUP_PERIOD_S = 5
_STARTUP_FAILURES = 24
_TOPICS_WAIT_S = 5


@dataclass(frozen=True)
class KubernetesOptions:
    """Where the pods find Kafka, and which optional resources to add."""

    bootstrap_servers: str = "kafka:9092"
    schema_registry_url: str = "http://schema-registry:8080/apis/ccompat/v7"
    security_protocol: str | None = None  # e.g. SASL_SSL
    sasl_mechanism: str | None = None  # e.g. SCRAM-SHA-512
    # Secret with keys `username` and `password` (STREAMS_SASL_*) [default P-kafka-credentials];
    # optional in the pods: without it, the variables are unset
    credentials_secret: str | None = None
    # Secret with key `url` (STREAMS_SINK_DATABASE_URL) of the sinks [default P-database];
    # optional too: without it, a sink writes to its declared database (inside the pod)
    database_secret: str | None = None
    environment: dict[str, str] = field(default_factory=dict)  # more variables (the ConfigMap)
    keda: bool = False
    strimzi_cluster: str | None = None
    resources: Resources = WORKER_RESOURCES


def kubernetes_manifests(plan: DeployPlan, options: KubernetesOptions) -> dict[str, list[Manifest]]:
    """Relative file path -> the resources it holds, in the order ``kubectl apply`` lists them."""
    files: dict[str, list[Manifest]] = {"config.yaml": [_config_map(plan, options)]}
    if options.strimzi_cluster is not None:
        files["topics.yaml"] = kafka_topics(
            plan.topics,
            cluster=options.strimzi_cluster,
            replication_factor=plan.replication_factor,
            min_insync_replicas=plan.min_insync_replicas,
            labels=_common(plan),
        )
    else:
        files["topics-job.yaml"] = [_topics_job(plan, options)]
    files["monitor.yaml"] = _monitor(plan, options)
    for stage in plan.stages:
        files[f"{stage.name}/statefulset.yaml"] = [_stateful_set(plan, stage, options)]
        files[f"{stage.name}/service.yaml"] = [_headless_service(plan, stage)]
        files[f"{stage.name}/pdb.yaml"] = [_disruption_budget(plan, stage)]
        if options.keda:
            files[f"{stage.name}/scaledobject.yaml"] = [_scaled_object(plan, stage)]
    return files


def _common(plan: DeployPlan) -> dict[str, str]:
    return {
        "app.kubernetes.io/part-of": plan.pipeline,
        "app.kubernetes.io/managed-by": "streams-deploy",
    }


def _selector(plan: DeployPlan, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/part-of": plan.pipeline, "app.kubernetes.io/component": component}


def _labels(plan: DeployPlan, component: str) -> dict[str, str]:
    return {**_common(plan), **_selector(plan, component)}


def _config_name(plan: DeployPlan) -> str:
    return resource_name(plan.pipeline, "streams")


def _monitor_name(plan: DeployPlan) -> str:
    return resource_name(plan.pipeline, "monitor")


def _config_map(plan: DeployPlan, options: KubernetesOptions) -> Manifest:
    data = {
        "STREAMS_BOOTSTRAP_SERVERS": options.bootstrap_servers,
        "STREAMS_SCHEMA_REGISTRY_URL": options.schema_registry_url,
        # the worker's drain deadline; terminationGracePeriodSeconds is derived from it
        "STREAMS_STAGE_SHUTDOWN_DEADLINE_S": f"{plan.shutdown_deadline_s:g}",
    }
    if options.security_protocol:
        data["STREAMS_SECURITY_PROTOCOL"] = options.security_protocol
    if options.sasl_mechanism:
        data["STREAMS_SASL_MECHANISM"] = options.sasl_mechanism
    data |= options.environment
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": _config_name(plan), "labels": _common(plan)},
        "data": data,
    }


def _environment(
    plan: DeployPlan, options: KubernetesOptions, *, sink: bool = False
) -> dict[str, Any]:
    """``envFrom`` the ConfigMap, and the secrets as ``env`` (optional: absent, unset)."""
    credentials = options.credentials_secret or resource_name(plan.pipeline, "kafka-credentials")
    secrets = [
        ("STREAMS_SASL_USERNAME", credentials, "username"),
        ("STREAMS_SASL_PASSWORD", credentials, "password"),
    ]
    if sink:
        database = options.database_secret or resource_name(plan.pipeline, "database")
        secrets.append(("STREAMS_SINK_DATABASE_URL", database, "url"))
    found: dict[str, Any] = {"envFrom": [{"configMapRef": {"name": _config_name(plan)}}]}
    if secrets:
        found["env"] = [
            {
                "name": variable,
                "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}},
            }
            for variable, secret, key in secrets
        ]
    return found


def _topics_job(plan: DeployPlan, options: KubernetesOptions) -> Manifest:
    name = resource_name(plan.pipeline, "topics")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": _labels(plan, "topics")},
        "spec": {
            # a broker that is not up yet: retried with the Job's backoff (10 s, 20 s, ...)
            "backoffLimit": 10,
            "template": {
                "metadata": {"labels": _labels(plan, "topics")},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "containers": [
                        {
                            "name": "topics",
                            "image": plan.image,
                            "command": plan.topics_command(),
                            **_environment(plan, options),
                        }
                    ],
                },
            },
        },
    }


def _wait_for_topics(plan: DeployPlan, options: KubernetesOptions) -> Manifest:
    reference = shlex.quote(plan.reference)
    script = (
        f"until streams topics describe --pipeline {reference} > /dev/null; do "
        f"echo 'waiting for the topics of {plan.reference}'; sleep {_TOPICS_WAIT_S}; done"
    )
    return {
        "name": "wait-for-topics",
        "image": plan.image,
        "command": ["sh", "-c", script],
        **_environment(plan, options),
    }


def _probe(path: str, period_s: int, failures: int) -> Manifest:
    return {
        "httpGet": {"path": path, "port": _HEALTH},
        "periodSeconds": period_s,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


_STATE_PATH = "/var/lib/streams/state"


def _stateful_set(plan: DeployPlan, stage: StagePlan, options: KubernetesOptions) -> Manifest:
    name = workload_name(plan.pipeline, stage.name)
    command = plan.run_command(
        stage,
        "--slot-from-hostname",
        "--health-port",
        str(HEALTH_PORT),
        "--health-host",
        "0.0.0.0",  # noqa: S104 - the kubelet probes the pod's own address
    )
    container: dict[str, Any] = {
        "name": "worker",
        "image": plan.image,
        "command": command,
        "ports": [{"name": _HEALTH, "containerPort": HEALTH_PORT}],
        **_environment(plan, options, sink=stage.kind == "sink"),
        "startupProbe": _probe("/livez", _STARTUP_PERIOD_S, _STARTUP_FAILURES),
        "livenessProbe": _probe("/livez", 10, 3),
        "readinessProbe": _probe("/readyz", 5, 3),
        "resources": options.resources.to_manifest(),
    }
    volumes: list[Manifest] = []
    if stage.kind == "aggregate":
        # the local store is a cache of the changelog: an emptyDir is enough (a new pod
        # restores its partitions from the changelog before it folds a record)
        container["env"] = [
            *container.get("env", []),
            {"name": "STREAMS_STATE_DIR", "value": _STATE_PATH},
        ]
        container["volumeMounts"] = [{"name": "state", "mountPath": _STATE_PATH}]
        volumes.append({"name": "state", "emptyDir": {}})
    spec: dict[str, Any] = {"serviceName": name}
    if not options.keda:  # with KEDA the HPA owns the count; apply must not reset it
        spec["replicas"] = stage.replicas
    spec |= {
        "podManagementPolicy": "Parallel",
        "selector": {"matchLabels": _selector(plan, stage.name)},
        "template": {
            "metadata": {"labels": _labels(plan, stage.name)},
            "spec": {
                "terminationGracePeriodSeconds": plan.stop_grace_s,
                "topologySpreadConstraints": [
                    {
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": _selector(plan, stage.name)},
                    }
                ],
                "initContainers": [_wait_for_topics(plan, options)],
                "containers": [container],
                **({"volumes": volumes} if volumes else {}),
            },
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "labels": _labels(plan, stage.name)},
        "spec": spec,
    }


def _headless_service(plan: DeployPlan, stage: StagePlan) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": workload_name(plan.pipeline, stage.name),
            "labels": _labels(plan, stage.name),
        },
        "spec": {
            "clusterIP": "None",
            "selector": _selector(plan, stage.name),
            "ports": [{"name": _HEALTH, "port": HEALTH_PORT, "targetPort": _HEALTH}],
        },
    }


def _disruption_budget(plan: DeployPlan, stage: StagePlan) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": workload_name(plan.pipeline, stage.name),
            "labels": _labels(plan, stage.name),
        },
        # maxUnavailable, not minAvailable: a one-pod stage can still be drained off a node
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(plan, stage.name)}},
    }


def _scaled_object(plan: DeployPlan, stage: StagePlan) -> Manifest:
    name = workload_name(plan.pipeline, stage.name)
    url = f"http://{_monitor_name(plan)}:{MONITOR_PORT}/api/scale/{stage.group_id}"
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "labels": _labels(plan, stage.name)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name},
            "minReplicaCount": stage.replicas,
            "maxReplicaCount": stage.partitions,
            "pollingInterval": _KEDA_POLLING_S,
            "cooldownPeriod": _KEDA_COOLDOWN_S,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleDown": {
                            "stabilizationWindowSeconds": _KEDA_COOLDOWN_S,
                            "policies": [
                                {"type": "Pods", "value": 1, "periodSeconds": _SCALE_DOWN_PERIOD_S}
                            ],
                        }
                    }
                }
            },
            "triggers": [
                {
                    "type": "metrics-api",
                    # AverageValue: desired replicas = ceil(value / targetValue) = the value
                    "metricType": "AverageValue",
                    "metadata": {
                        "url": url,
                        "format": "json",
                        "valueLocation": "suggested_replicas",
                        "targetValue": "1",
                    },
                }
            ],
        },
    }


def _monitor(plan: DeployPlan, options: KubernetesOptions) -> list[Manifest]:
    name = _monitor_name(plan)
    labels = _labels(plan, "monitor")
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": _selector(plan, "monitor")},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "monitor",
                                "image": plan.image,
                                "command": [
                                    "streams",
                                    "monitor",
                                    "--pipeline",
                                    plan.reference,
                                    "--host",
                                    "0.0.0.0",  # noqa: S104 - served to the cluster's Service
                                    "--port",
                                    str(MONITOR_PORT),
                                ],
                                "ports": [{"name": "http", "containerPort": MONITOR_PORT}],
                                **_environment(plan, options),
                                "readinessProbe": {
                                    "httpGet": {"path": "/health", "port": "http"},
                                    "periodSeconds": 10,
                                },
                            }
                        ]
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "selector": _selector(plan, "monitor"),
                "ports": [{"name": "http", "port": MONITOR_PORT, "targetPort": "http"}],
            },
        },
    ]
