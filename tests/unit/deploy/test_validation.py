"""The generated files validate against the real schemas of their consumers.

- built-in Kubernetes kinds: kubernetes-validate (the API's OpenAPI schemas), strict (an
  unknown field fails);
- the KEDA ScaledObject and the Strimzi KafkaTopic: their published CRD schemas (vendored in
  ``schemas/``, see its README) with jsonschema, plus the API server's pruning rule (a field
  the schema does not declare would be dropped: here it fails);
- the compose file: the compose-spec JSON schema (vendored);
- the systemd units: ``systemd-analyze verify``.

Each validator is first shown to reject a broken copy, so that a pass means something.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from streams.cli.main import cli
from tests.unit.deploy.golden import CASES, ORDERS, ROOT

SCHEMAS = Path(__file__).resolve().parent / "schemas"
KUBERNETES_VERSION = "1.33.0"
CRD_KINDS = {
    "ScaledObject": "keda.sh_scaledobjects.yaml",
    "KafkaTopic": "strimzi-043-Crd-kafkatopic.yaml",
}
# metadata.name of most kinds: an RFC 1123 subdomain (written out here, not imported)
SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _documents(generated: dict[str, dict[str, str]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for case in CASES:
        for relative, text in generated[case.name].items():
            if relative.endswith((".service", ".target", ".env")) or case.name.endswith(".yml"):
                continue
            for document in yaml.safe_load_all(text):
                yield f"{case.name}/{relative}", document


@cache
def _crd_schema(kind: str) -> tuple[str, dict[str, Any]]:
    """(apiVersion, the openAPIV3Schema) of the served version of a vendored CRD."""
    crd = yaml.safe_load((SCHEMAS / CRD_KINDS[kind]).read_text())
    version = next(v for v in crd["spec"]["versions"] if v["served"] and v["storage"])
    return f"{crd['spec']['group']}/{version['name']}", version["schema"]["openAPIV3Schema"]


def _undeclared(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the structural schema does not declare (the API server would prune them)."""
    if schema.get("x-kubernetes-preserve-unknown-fields") or not isinstance(value, dict | list):
        return []
    if isinstance(value, list):
        items = schema.get("items", {})
        return [p for i, item in enumerate(value) for p in _undeclared(item, items, f"{path}[{i}]")]
    properties = schema.get("properties")
    if properties is None:  # a map (additionalProperties) or a free object such as metadata
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return [p for k, v in value.items() for p in _undeclared(v, extra, f"{path}.{k}")]
        return []
    found = []
    for key, item in value.items():
        if key not in properties:
            found.append(f"{path}.{key}")
        else:
            found += _undeclared(item, properties[key], f"{path}.{key}")
    return found


def _validate_crd(document: dict[str, Any]) -> None:
    api_version, schema = _crd_schema(document["kind"])
    assert document["apiVersion"] == api_version
    jsonschema.validate(document, schema)
    undeclared = _undeclared(document, schema)
    assert not undeclared, f"fields the CRD does not declare: {undeclared}"
    assert SUBDOMAIN.match(document["metadata"]["name"]), document["metadata"]["name"]


def _validate(document: dict[str, Any]) -> None:
    if document["kind"] in CRD_KINDS:
        _validate_crd(document)
    else:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_every_generated_kubernetes_resource_validates(
    generated: dict[str, dict[str, str]],
) -> None:
    kinds: dict[str, int] = {}
    for where, document in _documents(generated):
        try:
            _validate(document)
        except Exception as error:  # noqa: BLE001 - each validator raises its own type
            pytest.fail(f"{where}: {document['kind']} {document['metadata']['name']}: {error}")
        kinds[document["kind"]] = kinds.get(document["kind"], 0) + 1
    expected = {"ConfigMap", "Job", "Deployment", "Service", "StatefulSet", "PodDisruptionBudget"}
    assert set(kinds) == expected | {"ScaledObject", "KafkaTopic"}


def _one(generated: dict[str, dict[str, str]], kind: str) -> dict[str, Any]:
    return next(document for _, document in _documents(generated) if document["kind"] == kind)


@pytest.mark.parametrize(
    ("kind", "path", "bad"),
    [
        ("StatefulSet", ("spec", "podManagementPolicy"), 3),
        ("StatefulSet", ("spec", "replica"), 2),  # a misspelled field: strict rejects it
        ("PodDisruptionBudget", ("spec", "maxUnavailable"), {"one": 1}),
        ("ScaledObject", ("spec", "minReplicaCount"), "1"),
        ("ScaledObject", ("spec", "maxReplicas"), 4),  # not a ScaledObject field
        ("KafkaTopic", ("spec", "partitions"), 0),
        ("KafkaTopic", ("metadata", "name"), "_streams.stats"),
    ],
)
def test_the_validators_reject_a_broken_resource(
    generated: dict[str, dict[str, str]], kind: str, path: tuple[str, str], bad: Any
) -> None:
    """Control: the same checks fail on a copy with one wrong field."""
    document = yaml.safe_load(yaml.safe_dump(_one(generated, kind)))
    document[path[0]][path[1]] = bad
    with pytest.raises(Exception):  # noqa: B017, PT011 - each validator raises its own error type
        _validate(document)


def test_names_kubernetes_refuses_go_in_topic_name(generated: dict[str, dict[str, str]]) -> None:
    topics = [document for _, document in _documents(generated) if document["kind"] == "KafkaTopic"]
    by_topic = {d["spec"].get("topicName", d["metadata"]["name"]): d for d in topics}
    stats = by_topic["_streams.stats"]
    assert stats["spec"]["topicName"] == "_streams.stats"
    assert SUBDOMAIN.match(stats["metadata"]["name"])
    assert "topicName" not in by_topic["orders.raw"]["spec"]
    # every topic of the pipeline: inputs, outputs, retry tiers, DLQs
    assert {"orders.enrich.retry.2s", "orders.enrich.retry.30s", "orders.enrich.dlq"} <= set(
        by_topic
    )


@cache
def _compose_validator() -> jsonschema.Draft7Validator:
    # the spec declares draft 07 as "https://json-schema.org/draft-07/schema", a spelling
    # jsonschema does not map to a metaschema: name the draft here
    schema = yaml.safe_load((SCHEMAS / "compose-spec.json").read_text())
    return jsonschema.Draft7Validator(schema)


def test_the_compose_file_validates_against_the_compose_spec() -> None:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    _compose_validator().validate(document)
    broken = yaml.safe_load(yaml.safe_dump(document))
    broken["services"]["enrich-0"]["commandd"] = broken["services"]["enrich-0"].pop("command")
    with pytest.raises(jsonschema.ValidationError):  # control
        _compose_validator().validate(broken)


def test_a_compose_file_without_the_stack_validates_too() -> None:
    result = CliRunner().invoke(
        cli, ["deploy", "compose", ORDERS, "--image", "shop:1", "--replicas", "enrich=3"]
    )
    assert result.exit_code == 0, result.output
    document = yaml.safe_load(result.stdout)
    _compose_validator().validate(document)
    assert [n for n in document["services"] if n.startswith("enrich-")] == [
        "enrich-0",
        "enrich-1",
        "enrich-2",
    ]


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def _verify(folder: Path, units: list[str]) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", *(f"./{unit}" for unit in units)],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (apt-get install systemd)"
)
def test_the_systemd_units_verify(tmp_path: Path) -> None:
    streams = shutil.which("streams") or str(Path(__file__).parents[3] / ".venv/bin/streams")
    result = CliRunner().invoke(
        cli,
        ["deploy", "systemd", ORDERS, "--out", str(tmp_path), "--replicas", "enrich=2",
         "--executable", streams],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    units = sorted(p.name for p in tmp_path.iterdir() if p.suffix in {".service", ".target"})
    instances = ["streams-orders-enrich@0.service", "streams-orders-enrich@1.service"]
    verified = _verify(tmp_path, [*units, *instances])
    # systemd-analyze exits 0 on some bad settings and only prints them: both must be clean
    assert verified.returncode == 0, verified.stderr
    assert verified.stderr.strip() == "", verified.stderr

    template = tmp_path / "streams-orders-enrich@.service"
    good = template.read_text()
    template.write_text(good.replace("KillSignal=SIGTERM", "KillSignal=SIGBOGUS"))
    assert "SIGBOGUS" in _verify(tmp_path, [template.name]).stderr  # control: a bad setting
    template.write_text(good.replace(streams, "/nonexistent/streams"))
    assert _verify(tmp_path, [template.name]).returncode != 0  # control: a missing program
