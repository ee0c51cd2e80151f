"""Filters and offset ranges (streams.replay.selection)."""

from __future__ import annotations

import pytest

from streams.exceptions import BadArgumentError
from streams.replay.letters import Letter, read_letter
from streams.replay.selection import Filters, parse_header_filters, parse_offsets, restrict
from tests.unit.replay.fakes import NOW, FakeMessage, ours


def letter(
    found: list[tuple[str, bytes]] | None = None, *, key: bytes = b"k", timestamp_ms: int = NOW
) -> Letter:
    return read_letter(FakeMessage(found=found or ours(), key=key, timestamp_ms=timestamp_ms))


def test_empty_filters_select_everything() -> None:
    assert Filters().empty
    assert Filters().matches(letter())
    assert Filters().describe() == "none"


def test_time_window_is_since_inclusive_until_exclusive() -> None:
    at = letter(timestamp_ms=NOW)
    assert Filters(since_ms=NOW).matches(at)
    assert not Filters(since_ms=NOW + 1).matches(at)
    assert Filters(until_ms=NOW + 1).matches(at)
    assert not Filters(until_ms=NOW).matches(at)


def test_reasons_are_or_and_kinds_are_and() -> None:
    handler = letter(found=ours(reason="handler"), key=b"k1")
    assert Filters(reasons=("validation", "handler")).matches(handler)
    assert not Filters(reasons=("validation",)).matches(handler)
    assert Filters(reasons=("handler",), keys=("k1",)).matches(handler)
    assert not Filters(reasons=("handler",), keys=("k2",)).matches(handler)


def test_error_class_matches_the_full_name_or_its_last_part() -> None:
    found = letter(found=ours(error_class="streams.exceptions.DependencyUnavailable"))
    for wanted in (
        "streams.exceptions.DependencyUnavailable",
        "DependencyUnavailable",
        "exceptions.DependencyUnavailable",
    ):
        assert Filters(error_classes=(wanted,)).matches(found), wanted
    assert not Filters(error_classes=("Unavailable",)).matches(found)


def test_header_filters_all_must_match_any_occurrence_counts() -> None:
    found = letter(found=ours(extra=[("tenant", b"acme"), ("tenant", b"globex"), ("x", b"1")]))
    assert Filters(headers=(("tenant", "globex"),)).matches(found)
    assert Filters(headers=(("tenant", "acme"), ("x", "1"))).matches(found)
    assert not Filters(headers=(("tenant", "acme"), ("x", "2"))).matches(found)


def test_filters_round_trip_through_the_ledger_form() -> None:
    filters = Filters(
        since_ms=1,
        until_ms=2,
        reasons=("a",),
        error_classes=("B",),
        keys=("k",),
        headers=(("n", "v=w"),),
    )
    assert Filters.from_dict(filters.to_dict()) == filters
    assert filters.describe() == (
        "since 1970-01-01T00:00:00.001Z; until 1970-01-01T00:00:00.002Z; reasons a; "
        "error_classes B; keys k; headers n=v=w"
    )


def test_parse_header_filters_splits_at_the_first_equals_sign() -> None:
    assert parse_header_filters(["a=b=c", "empty="]) == (("a", "b=c"), ("empty", ""))
    with pytest.raises(BadArgumentError):
        parse_header_filters(["novalue"])


def test_parse_offsets_forms_inclusive_to() -> None:
    assert parse_offsets(["0:100-199", "1:5-", "2:7"]) == {0: (100, 200), 1: (5, None), 2: (7, 8)}


@pytest.mark.parametrize("bad", ["0:9-3", "x:1-2", "0", "0:1-2-3", "-1:0-1"])
def test_parse_offsets_refuses_malformed_ranges(bad: str) -> None:
    with pytest.raises(BadArgumentError):
        parse_offsets([bad])


def test_parse_offsets_refuses_a_partition_twice() -> None:
    with pytest.raises(BadArgumentError, match="twice"):
        parse_offsets(["0:1-2", "0:5-6"])


def test_restrict_cuts_to_the_ranges_and_leaves_other_partitions_out() -> None:
    ranges = {0: (10, 50), 1: (0, 30), 2: (0, 5)}
    assert restrict(ranges, {}) == ranges
    assert restrict(ranges, {0: (0, 20), 1: (25, None)}) == {0: (10, 20), 1: (25, 30)}
    assert restrict(ranges, {0: (60, 70)}) == {0: (50, 50)}  # beyond the end: empty
    with pytest.raises(BadArgumentError, match="partitions"):
        restrict(ranges, {9: (0, 1)})
