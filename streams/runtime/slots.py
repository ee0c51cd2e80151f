"""Which slots a `streams run` runs: ``--slot N``, ``--slots A-B``, ``--slot-from-hostname``.

A slot is a worker's identity in its stage: the consumer's ``group.instance.id`` and the
producer's ``transactional.id`` (``<pipeline>.<stage>.<slot>``). Two hosts that run one stage
must run different slots; a worker restarted on its slot takes over its predecessor's open
transaction at once. Without an option a `streams run` runs slots 0..workers-1, as before.

``STREAMS_SLOT=N`` is ``--slot N`` (an environment for one container image). Each function
here raises ``SlotError`` with one line for the operator; the CLI turns it into exit 2.
"""

from __future__ import annotations

import re

__all__ = ["SlotError", "choose_slots", "parse_slot_range", "slot_from_hostname"]

# a StatefulSet pod is <statefulset>-<ordinal>; the ordinal ends the name
_TRAILING_ORDINAL = re.compile(r"-(\d+)$")


class SlotError(ValueError):
    """A slot option the run cannot use; its message is the line the operator sees."""


def parse_slot_range(text: str) -> list[int]:
    """``A-B`` (inclusive, A <= B) or a single ``N``: the slots, in order."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if match is None:
        raise SlotError(f"--slots {text!r}: give A-B with whole numbers A <= B, e.g. --slots 0-2")
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) is not None else first
    if last < first:
        raise SlotError(
            f"--slots {text}: the range runs backwards; give the lower slot first "
            f"(--slots {last}-{first})"
        )
    return list(range(first, last + 1))


def slot_from_hostname(hostname: str | None) -> int:
    """The trailing ``-N`` of the host name (a StatefulSet pod ``orders-enrich-2``: 2)."""
    if not hostname:
        raise SlotError("--slot-from-hostname: HOSTNAME is not set; give --slot N instead")
    match = _TRAILING_ORDINAL.search(hostname)
    if match is None:
        raise SlotError(
            f"--slot-from-hostname: the host name {hostname!r} does not end in -N "
            "(a StatefulSet pod such as orders-enrich-2); give --slot N instead"
        )
    return int(match.group(1))


def choose_slots(
    *,
    slot: int | None,
    slots: str | None,
    from_hostname: bool,
    hostname: str | None,
    workers: int,
    workers_given: bool,
) -> list[int]:
    """The slots to run for each stage, from the options (at most one of them)."""
    chosen = [
        name
        for name, given in (
            ("--slot/STREAMS_SLOT", slot is not None),
            ("--slots", slots is not None),
            ("--slot-from-hostname", from_hostname),
        )
        if given
    ]
    if len(chosen) > 1:
        raise SlotError(f"give one of {', '.join(chosen)}, not several")
    if chosen and workers_given and workers != 1:
        raise SlotError(
            f"{chosen[0]} chooses the slots itself: drop --workers {workers} "
            "(or run several slots with --slots A-B)"
        )
    if slot is not None:
        if slot < 0:
            raise SlotError(f"--slot {slot}: a slot is a whole number from 0")
        return [slot]
    if slots is not None:
        return parse_slot_range(slots)
    if from_hostname:
        return [slot_from_hostname(hostname)]
    return list(range(workers))
