"""The orders pipeline's totals stage: its declaration, and the check of its output."""

from __future__ import annotations

from streams.examples.orders import TOTALS, pipeline
from streams.examples.totals import compare_totals

MIN = 60_000
T0 = 1_700_000_040_000  # a whole minute


def _iso(ms: int) -> str:
    from datetime import UTC, datetime  # noqa: PLC0415

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def test_the_totals_stage_regroups_by_customer_with_a_changelog() -> None:
    spec = pipeline.component("totals")
    assert spec.kind == "aggregate"
    assert list(spec.outputs) == [TOTALS]
    assert spec.repartition_topic == "orders.totals.repartition"
    names = {t.name: t for t in pipeline.topic_specs()}
    assert names["orders.totals.changelog"].config["cleanup.policy"] == "compact"
    assert names["orders.totals.changelog"].partitions == names["orders.priced"].partitions


def test_compare_totals_matches_and_catches_each_difference() -> None:
    stored = [
        ("o1", "c1", 100, _iso(T0 + 1000)),
        ("o2", "c1", 50, _iso(T0 + 2000)),
        ("o3", "c2", 7, _iso(T0 + 3000)),
        ("o4", "c1", 9, _iso(T0 + 4000)),  # late: in the DLQ, not counted
        ("o5", "c1", 1, _iso(T0 + 5 * MIN)),  # its window is still open
    ]
    emitted = [("c1", T0, [2, 150]), ("c2", T0, [1, 7])]
    report = compare_totals(stored, {"o4"}, emitted, window_s=60, grace_s=10)
    assert report.ok, report.lines()
    assert (report.windows_matching, report.pending, report.late_orders) == (2, 1, 1)

    wrong = compare_totals(stored, {"o4"}, [("c1", T0, [3, 159]), ("c2", T0, [1, 7])])
    assert not wrong.ok
    assert wrong.mismatched
    twice = compare_totals(stored, {"o4"}, [*emitted, emitted[0]], window_s=60, grace_s=10)
    assert twice.duplicates == 1
    assert not twice.ok
    missing = compare_totals(stored, {"o4"}, emitted[:1], window_s=60, grace_s=10)
    assert missing.missing
    assert not missing.ok
