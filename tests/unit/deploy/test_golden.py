"""The generators' output for the orders pipeline is what the golden files hold.

Update them after an intended change: ``UPDATE_GOLDEN=1 PYTHONPATH=. .venv/bin/pytest
tests/unit/deploy/test_golden.py -q`` (see ``tests/unit/deploy/golden.py``).
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.unit.deploy.golden import CASES, Case

UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def _expected(case: Case) -> dict[str, str]:
    if case.to_stdout:
        return {"": case.expected.read_text()} if case.expected.exists() else {}
    return {
        path.relative_to(case.expected).as_posix(): path.read_text()
        for path in sorted(case.expected.rglob("*"))
        if path.is_file()
    }


def _update(case: Case, files: dict[str, str]) -> None:
    if case.to_stdout:
        case.expected.write_text(files[""])
        return
    shutil.rmtree(case.expected, ignore_errors=True)
    for relative, text in files.items():
        path = case.expected / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_generated_files_match_the_golden_files(
    case: Case, generated: dict[str, dict[str, str]]
) -> None:
    files = generated[case.name]
    if UPDATE:
        _update(case, files)
    expected = _expected(case)
    assert sorted(files) == sorted(expected), "files added or missing; see UPDATE_GOLDEN"
    for relative, text in files.items():
        assert text == expected[relative], f"{case.expected / relative} differs; see UPDATE_GOLDEN"


def test_a_changed_generator_is_caught(generated: dict[str, dict[str, str]]) -> None:
    """Control: one changed character in a generated file does not pass the comparison."""
    case = CASES[0]
    files = dict(generated[case.name])
    files["enrich/statefulset.yaml"] = files["enrich/statefulset.yaml"].replace(
        "terminationGracePeriodSeconds: 45", "terminationGracePeriodSeconds: 44"
    )
    assert files != _expected(case)
