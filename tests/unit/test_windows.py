"""Window assignment and watermarks (streams.windows): pure, no broker."""

from __future__ import annotations

import pytest

from streams.exceptions import TopologyError
from streams.windows import MAX_TIME_MS, TABLE, Hopping, Tumbling, Watermark, Window, windows_of


def test_tumbling_puts_each_time_in_exactly_one_window() -> None:
    spec = Tumbling(60, grace_s=10)
    assert spec.windows(0) == [Window(0, 60_000)]
    assert spec.windows(59_999) == [Window(0, 60_000)]
    assert spec.windows(60_000) == [Window(60_000, 120_000)]
    assert spec.grace_ms == 10_000


def test_hopping_puts_each_time_in_size_over_step_windows() -> None:
    spec = Hopping(60, 20, grace_s=0)
    assert spec.windows(65_000) == [
        Window(20_000, 80_000),
        Window(40_000, 100_000),
        Window(60_000, 120_000),
    ]
    assert spec.windows(0) == [Window(-40_000, 20_000), Window(-20_000, 40_000), Window(0, 60_000)]


def test_no_window_is_one_table_that_never_closes() -> None:
    assert windows_of(None, 123) == [TABLE]
    assert not TABLE.closed_by(MAX_TIME_MS - 1)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Tumbling(0),
        lambda: Tumbling(10, grace_s=-1),
        lambda: Hopping(10, 20),
        lambda: Hopping(10, 5, grace_s=-0.5),
        lambda: Hopping(10, 0),
    ],
)
def test_bad_windows_are_refused_at_declaration(build: object) -> None:
    with pytest.raises(TopologyError):
        build()  # type: ignore[operator]


def test_watermark_is_the_largest_event_time_minus_grace() -> None:
    mark = Watermark(grace_ms=5)
    assert mark.value < -(2**62)
    assert mark.observe(100)
    assert mark.value == 95
    assert not mark.observe(90)  # out of order: the watermark does not move back
    assert mark.value == 95
    assert mark.observe(101)
    assert mark.value == 96
    assert Window(0, 96).closed_by(mark.value)
    assert not Window(0, 97).closed_by(mark.value)
