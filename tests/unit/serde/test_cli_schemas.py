"""`streams schemas check` in-process: arguments, output and exit codes, without a registry."""

from __future__ import annotations

import copy
import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from streams.cli.main import cli
from streams.cli.output import EXIT_CHECK_FAILED, EXIT_FAILED

from .models import ORDER_V1, SCHEMAS

USAGE_ERROR = 2


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["schemas", "check", *args])


@pytest.fixture
def schemas(tmp_path: Path) -> Path:
    """A writable copy of the unit-test schemas."""
    root = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, root)
    return root


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local port that refuses connections: bound, never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def order_v1() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(ORDER_V1.read_text())
    return document


def test_good_schemas_pass_without_a_registry(schemas: Path) -> None:
    result = run("--schemas-dir", str(schemas), "--no-registry")

    assert result.exit_code == 0, result.output
    assert "3 schema file(s), 2 subject(s)" in result.output
    assert "ok    tests.orders.OrderPlaced  v1,v2" in result.output
    assert "ok    tests.payments.PaymentReceived  v1" in result.output
    assert result.output.rstrip().endswith("ok")


def test_json_output_is_one_object_with_every_subject(schemas: Path) -> None:
    result = run("--schemas-dir", str(schemas), "--no-registry", "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True
    assert report["registry_url"] is None
    assert report["files"] == 3
    assert [(s["subject"], s["versions"]) for s in report["subjects"]] == [
        ("tests.orders.OrderPlaced", [1, 2]),
        ("tests.payments.PaymentReceived", [1]),
    ]
    assert all(s["registry"] is None for s in report["subjects"])


def test_a_version_that_breaks_backward_compatibility_exits_3(schemas: Path) -> None:
    v3 = json.loads((schemas / "orders" / "order_placed.v2.avsc").read_text())
    v3["fields"].append({"name": "coupon", "type": "string"})
    (schemas / "orders" / "order_placed.v3.avsc").write_text(json.dumps(v3))

    result = run("--schemas-dir", str(schemas), "--no-registry")

    assert result.exit_code == EXIT_CHECK_FAILED, result.output
    assert "FAIL  tests.orders.OrderPlaced  v1,v2,v3" in result.output
    assert "- v3 cannot read records written with v2: coupon: added without a default" in (
        result.output
    )
    assert "ok    tests.payments.PaymentReceived" in result.output


def test_a_gap_in_versions_exits_3(schemas: Path) -> None:
    (schemas / "orders" / "order_placed.v2.avsc").rename(
        schemas / "orders" / "order_placed.v3.avsc"
    )

    result = run("--schemas-dir", str(schemas), "--no-registry", "--json")

    assert result.exit_code == EXIT_CHECK_FAILED
    report = json.loads(result.output)
    (orders,) = [s for s in report["subjects"] if s["subject"] == "tests.orders.OrderPlaced"]
    assert orders["ok"] is False
    assert "found versions 1, 3 but not v2" in orders["problems"][0]


@pytest.mark.parametrize(
    ("file_name", "content", "expected"),
    [
        ("orders/order_cancelled.avsc", json.dumps(order_v1()), "file name must be"),
        ("orders/order_cancelled.v1.avsc", "{", "not valid JSON"),
        ("orders/order_cancelled.v1.avsc", '{"type": "record", "name": "X"}', "not a valid Avro"),
    ],
    ids=["bad-file-name", "invalid-json", "invalid-avro"],
)
def test_a_bad_file_exits_3_naming_the_file(
    schemas: Path, file_name: str, content: str, expected: str
) -> None:
    (schemas / file_name).write_text(content)

    result = run("--schemas-dir", str(schemas), "--no-registry")

    assert result.exit_code == EXIT_CHECK_FAILED
    assert f"FAIL  {schemas / file_name}: {expected}" in result.output


def test_a_folder_without_schemas_exits_3(tmp_path: Path) -> None:
    result = run("--schemas-dir", str(tmp_path), "--no-registry")

    assert result.exit_code == EXIT_CHECK_FAILED
    assert "no .avsc files under" in result.output


def test_a_missing_folder_is_a_usage_error(tmp_path: Path) -> None:
    result = run("--schemas-dir", str(tmp_path / "nope"), "--no-registry")

    assert result.exit_code == USAGE_ERROR
    assert "does not exist" in result.output


@pytest.mark.parametrize(
    "extra", [["--register"], ["--registry", "http://127.0.0.1:1"]], ids=["register", "registry"]
)
def test_no_registry_with_registry_options_is_a_usage_error(
    schemas: Path, extra: list[str]
) -> None:
    result = run("--schemas-dir", str(schemas), "--no-registry", *extra)

    assert result.exit_code == USAGE_ERROR
    assert "--no-registry cannot be combined" in result.output


def test_an_unreachable_registry_exits_1_with_a_hint(schemas: Path, closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}"

    result = run("--schemas-dir", str(schemas), "--registry", url)

    assert result.exit_code == EXIT_FAILED
    assert f"error: schema registry unreachable at {url}" in result.stderr
    assert "hint: start it (`streams local up`)" in result.stderr
    assert "--no-registry" in result.stderr


def test_the_registry_url_defaults_to_the_environment(
    schemas: Path, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{closed_port}/apis/ccompat/v7"
    monkeypatch.setenv("STREAMS_SCHEMA_REGISTRY_URL", url)

    result = run("--schemas-dir", str(schemas))

    assert result.exit_code == EXIT_FAILED
    assert f"unreachable at {url}" in result.stderr


def test_an_invalid_registry_url_exits_1(schemas: Path) -> None:
    result = run("--schemas-dir", str(schemas), "--registry", "ftp://registry")

    assert result.exit_code == EXIT_FAILED
    assert "error: invalid schema registry URL 'ftp://registry'" in result.stderr


def test_local_problems_skip_the_registry_comparison(schemas: Path, closed_port: int) -> None:
    broken = copy.deepcopy(order_v1())
    broken["fields"].append({"name": "coupon", "type": "string"})
    (schemas / "orders" / "order_placed.v3.avsc").write_text(json.dumps(broken))
    (schemas / "payments" / "payment_received.v1.avsc").unlink()

    result = run("--schemas-dir", str(schemas), "--registry", f"http://127.0.0.1:{closed_port}")

    assert result.exit_code == EXIT_CHECK_FAILED, result.output
    assert "registry: skipped (not compared: fix the local problems first)" in result.output
