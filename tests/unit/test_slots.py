"""Slot options of `streams run`: which slots, and the one-line errors for bad ones."""

from __future__ import annotations

import pytest

from streams.runtime.slots import SlotError, choose_slots, parse_slot_range, slot_from_hostname


def choose(**given: object) -> list[int]:
    options: dict[str, object] = {
        "slot": None,
        "slots": None,
        "from_hostname": False,
        "hostname": None,
        "workers": 1,
        "workers_given": False,
    }
    options.update(given)
    return choose_slots(**options)  # type: ignore[arg-type]


def test_the_default_is_slots_0_to_workers_minus_1() -> None:
    assert choose() == [0]
    assert choose(workers=3, workers_given=True) == [0, 1, 2]


def test_one_slot_a_range_and_a_statefulset_pod_name() -> None:
    assert choose(slot=4) == [4]
    assert choose(slots="2-4") == [2, 3, 4]
    assert parse_slot_range("3") == [3]
    assert choose(from_hostname=True, hostname="orders-enrich-2") == [2]
    assert slot_from_hostname("enrich-12") == 12


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"slot": -1}, "--slot -1: a slot is a whole number from 0"),
        ({"slots": "3-1"}, "the range runs backwards; give the lower slot first (--slots 1-3)"),
        ({"slots": "a-b"}, "give A-B with whole numbers A <= B"),
        ({"from_hostname": True, "hostname": "web"}, "the host name 'web' does not end in -N"),
        ({"from_hostname": True, "hostname": None}, "HOSTNAME is not set"),
        ({"slot": 1, "workers": 2, "workers_given": True}, "drop --workers 2"),
        ({"slot": 1, "slots": "0-1"}, "give one of --slot/STREAMS_SLOT, --slots, not several"),
    ],
    ids=["negative", "backwards", "not-numbers", "no-ordinal", "no-hostname", "workers", "both"],
)
def test_bad_slot_options_say_what_to_give(given: dict[str, object], message: str) -> None:
    with pytest.raises(SlotError, match=None) as raised:
        choose(**given)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
