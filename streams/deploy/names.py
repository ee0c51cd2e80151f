"""Kubernetes names for a pipeline's objects: stage workloads and Strimzi topics.

A StatefulSet's pods are ``<name>-<ordinal>``, and that name is the pod's hostname, so the
workload of stage ``S`` of pipeline ``P`` is ``P-S`` in lower case: ``orders-enrich-2`` is slot
2 of stage ``enrich`` (``streams run --slot-from-hostname`` reads the trailing ``-2``).
"""

from __future__ import annotations

import hashlib
import re

from streams.exceptions import ConfigError

__all__ = ["is_resource_name", "resource_name", "topic_resource_name", "workload_name"]

# RFC 1123 subdomain (metadata.name of most kinds): lower-case alphanumerics, '-' and '.',
# alphanumeric at both ends, at most 253 characters.
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_SUBDOMAIN_MAX = 253
# RFC 1123 label (Service names, pod hostnames): no dots, at most 63 characters.
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_MAX = 63
# A StatefulSet adds "-<ordinal>" to its pods' names, and the controller puts the pod name in
# the label controller-revision-hash as "<name>-<10 characters>": 63 - 11 leaves 52.
_WORKLOAD_MAX = 52
_NOT_ALLOWED = re.compile(r"[^-a-z0-9.]+")
_DIGEST_LENGTH = 8


def is_resource_name(name: str) -> bool:
    """True if Kubernetes accepts ``name`` as a metadata.name (RFC 1123 subdomain)."""
    return len(name) <= _SUBDOMAIN_MAX and bool(_SUBDOMAIN.match(name))


def resource_name(*parts: str) -> str:
    """``parts`` joined with '-' as an RFC 1123 label, or a one-line error naming the limit."""
    name = "-".join(parts).lower().replace("_", "-").replace(".", "-")
    if len(name) > _LABEL_MAX or not _LABEL.match(name):
        raise ConfigError(
            f"{'-'.join(parts)!r} does not make a Kubernetes name (lower-case letters, digits "
            f"and '-', at most {_LABEL_MAX} characters)",
            hint="shorten the pipeline or stage name",
        )
    return name


def workload_name(pipeline: str, stage: str) -> str:
    """``P-S``: the StatefulSet (and its headless Service) of one stage."""
    name = resource_name(pipeline, stage)
    if len(name) > _WORKLOAD_MAX:
        raise ConfigError(
            f"StatefulSet name {name!r} is longer than {_WORKLOAD_MAX} characters, so its pods "
            "could not be named",
            hint="shorten the pipeline or stage name",
        )
    return name


def topic_resource_name(topic: str) -> str:
    """The metadata.name of a KafkaTopic: the topic name itself where Kubernetes accepts it.

    Otherwise (upper case, '_', a leading '.'; for example ``_streams.stats``) the allowed
    characters of the name plus a digest of the full name, so that two topics never share a
    resource; the real name then goes in ``spec.topicName``.
    """
    if is_resource_name(topic):
        return topic
    digest = hashlib.sha256(topic.encode()).hexdigest()[:_DIGEST_LENGTH]
    stem = _NOT_ALLOWED.sub("-", topic.lower()).strip("-.")
    stem = stem[: _SUBDOMAIN_MAX - _DIGEST_LENGTH - 1].rstrip("-.")
    return f"{stem}-{digest}" if stem else f"topic-{digest}"
