"""The aggregate under faults: 20,000 records, 6 SIGKILLs (`make test`); with a broker restart
in `make chaos`. Every closed window must equal its offline recomputation, once; the DLQ's late
records must be exactly the planned ones (tests/chaos/aggregate_check.py, whose unit test is the
control that shows the check fails on a duplicate, a lost or a recounted window)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.aggregate import AggregateChaos, AggregateChaosConfig
from tests.chaos.harness import private_stack, write_result
from tests.integration.conftest import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_aggregate_windows_survive_worker_kills_exactly_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    config = AggregateChaosConfig(records=20_000, rate=400, kills=6, progress=500)
    report = AggregateChaos(config, bootstrap=cluster.bootstrap_servers, workdir=tmp_path).run()
    summary = report.summary()
    write_result("aggregate-kills", summary)
    assert report.violations == [], summary
    assert summary["faults"]["sigkill"] == config.kills
    assert report.windows_emitted > 1000
    assert report.late_in_dlq == 50
    assert len(report.restores) >= config.kills  # every restart restored before folding


@pytest.mark.chaos_broker
def test_aggregate_windows_survive_kills_and_a_broker_restart(tmp_path: Path) -> None:
    stack = private_stack(tmp_path)
    stack.up(with_registry=False)
    try:
        config = AggregateChaosConfig(records=20_000, rate=300, kills=6, broker_restarts=1)
        report = AggregateChaos(
            config, bootstrap=stack.settings.bootstrap_servers, workdir=tmp_path, stack=stack
        ).run()
    finally:
        stack.down()
    summary = report.summary()
    write_result("aggregate-broker", summary)
    assert report.violations == [], summary
    assert summary["faults"]["broker-clean"] == 1
