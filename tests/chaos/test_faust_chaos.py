"""The faust adapter under the aggregate's kill schedule (6 SIGKILLs, 20,000 records), and its
control: faust's own sends, outside the transaction, which the same check must catch.

What the adapter guarantees is what the first run measures (README "faust agents"): no record
lost, the DLQ exactly the events that raised, and the duplicates counted. Run by `make chaos`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.faust_chaos import FaustChaos, FaustChaosConfig
from tests.chaos.harness import write_result
from tests.integration.conftest import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.soak]


def test_the_faust_adapter_loses_nothing_and_counts_its_duplicates(
    cluster: Cluster, tmp_path: Path
) -> None:
    config = FaustChaosConfig(records=20_000, rate=300, kills=6)
    report = FaustChaos(config, bootstrap=cluster.bootstrap_servers, workdir=tmp_path).run()
    summary = report.summary()
    write_result("faust", summary)
    assert report.lost == 0, summary
    assert report.dead_wrong == [], summary
    assert report.dead_lettered == 20
    assert report.output_markers > 0  # the outputs went through transactions
    assert summary["kills"] == config.kills


def test_control_faust_as_shipped_duplicates_output_and_the_check_sees_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    config = FaustChaosConfig(records=20_000, rate=300, kills=6, unpatched=True)
    report = FaustChaos(config, bootstrap=cluster.bootstrap_servers, workdir=tmp_path).run()
    summary = report.summary()
    write_result("faust-unpatched", summary)
    assert report.output_markers == 0  # faust-streaming/faust#177: no transaction at all
    assert report.duplicates > 0, summary
