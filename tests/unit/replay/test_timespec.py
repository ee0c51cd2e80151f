"""Times and durations as operators type them (streams.replay.timespec)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streams.exceptions import BadArgumentError
from streams.replay.timespec import format_ms, parse_duration, parse_time

NOW = 1_764_633_600_000  # 2025-12-02T00:00:00Z


def ms(year: int, month: int, day: int, hour: int = 0) -> int:
    return int(datetime(year, month, day, hour, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-12-01T10:00:00", ms(2025, 12, 1, 10)),  # no zone: UTC, as kafka-consumer-groups
        ("2025-12-01T10:00:00Z", ms(2025, 12, 1, 10)),
        ("2025-12-01T10:00:00z", ms(2025, 12, 1, 10)),
        ("2025-12-01T11:00:00+01:00", ms(2025, 12, 1, 10)),
        ("2025-12-01T10:00:00.250", ms(2025, 12, 1, 10) + 250),
        ("2025-12-01", ms(2025, 12, 1)),
        ("now", NOW),
        ("2h", NOW - 7_200_000),
        ("1h30m", NOW - 5_400_000),
        ("45s", NOW - 45_000),
        ("1d", NOW - 86_400_000),
        ("1500ms", NOW - 1500),
    ],
)
def test_parse_time_accepts_iso_relative_and_now(text: str, expected: int) -> None:
    assert parse_time(text, now_ms=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "2025-13-01", "2h ago", "12:00:00x", "", "-2h"])
def test_parse_time_refuses_what_it_cannot_read_with_a_hint(text: str) -> None:
    with pytest.raises(BadArgumentError) as raised:
        parse_time(text, now_ms=NOW)
    assert "is not a time" in raised.value.message
    assert "ISO-8601" in raised.value.hint


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2h", 7200),
        ("1h30m", 5400),
        ("PT2H", 7200),
        ("P1DT2H", 93600),
        ("PT0.5S", 0.5),
        ("P2W", 1_209_600),
        ("90s", 90),
    ],
)
def test_parse_duration_reads_short_and_iso_forms(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["P", "PT", "2 hours", "H2", "P1Y"])
def test_parse_duration_refuses_other_forms(text: str) -> None:
    with pytest.raises(BadArgumentError):
        parse_duration(text)


def test_format_ms_is_iso_utc_with_milliseconds() -> None:
    assert format_ms(ms(2025, 12, 1, 10) + 7) == "2025-12-01T10:00:00.007Z"
    assert format_ms(None) == "-"
