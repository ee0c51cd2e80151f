"""`streams run` slot options in-process: a bad one is one clear line and exit 2."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from streams.cli.main import cli


@pytest.mark.parametrize(
    ("args", "env", "error"),
    [
        (["--slot", "-1"], {}, "Error: --slot -1: a slot is a whole number from 0"),
        (
            ["--slots", "3-1"],
            {},
            "Error: --slots 3-1: the range runs backwards; give the lower slot first (--slots 1-3)",
        ),
        (
            ["--slot-from-hostname"],
            {"HOSTNAME": "web"},
            (
                "Error: --slot-from-hostname: the host name 'web' does not end in -N "
                "(a StatefulSet pod such as orders-enrich-2); give --slot N instead"
            ),
        ),
        (
            ["--slot", "1", "--workers", "2"],
            {},
            (
                "Error: --slot/STREAMS_SLOT chooses the slots itself: drop --workers 2 "
                "(or run several slots with --slots A-B)"
            ),
        ),
        (
            ["--workers", "2"],
            {"STREAMS_SLOT": "3"},
            (
                "Error: --slot/STREAMS_SLOT chooses the slots itself: drop --workers 2 "
                "(or run several slots with --slots A-B)"
            ),
        ),
    ],
    ids=["negative-slot", "backwards-range", "hostname-without-ordinal", "slot-and-workers", "env"],
)
def test_a_bad_slot_option_is_one_line_and_exit_2(
    args: list[str], env: dict[str, str], error: str
) -> None:
    result = CliRunner().invoke(
        cli, ["run", "tests.integration.pipelines:copy", "--stage", "copy", *args], env=env
    )

    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[-1] == error
    assert sum(line.startswith("Error:") for line in result.stderr.splitlines()) == 1
