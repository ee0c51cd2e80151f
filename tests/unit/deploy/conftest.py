"""Generate the golden cases once per session (in-process, with no STREAMS_* overrides)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.cli.main import cli
from tests.unit.deploy.golden import CASES, Case


def run_case(case: Case, out: Path) -> dict[str, str]:
    """Relative path -> text the command wrote (or ``{"": stdout}``)."""
    args = [out.as_posix() if arg == "{out}" else arg for arg in case.args]
    # the drain deadline comes from the environment: the goldens hold the default
    result = CliRunner().invoke(cli, args, env={"STREAMS_STAGE_SHUTDOWN_DEADLINE_S": None})
    assert result.exit_code == 0, result.output
    if case.to_stdout:
        return {"": result.stdout}
    return {
        path.relative_to(out).as_posix(): path.read_text()
        for path in sorted(out.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    return {case.name: run_case(case, tmp_path_factory.mktemp(case.name)) for case in CASES}
