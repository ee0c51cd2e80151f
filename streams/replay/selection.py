"""Which DLQ records a command is about: filters and offset ranges. Pure: no broker, no clock.

Filters combine with AND across kinds and OR within one kind: ``--reason handler --reason
validation --key k1`` selects the records of key ``k1`` dead-lettered for either reason.

=============================  ==============================================================
``--since T`` / ``--until T``  the DLQ record's timestamp (when it was dead-lettered) is at or
                               after ``since`` and before ``until`` (``streams.replay.timespec``)
``--reason R``                 ``streams.error.reason`` (or the foreign format's, see
                               ``streams.replay.letters``) equals ``R``
``--error-class C``            the error class equals ``C``, or ends with ``.C``
                               (``DependencyUnavailable`` matches
                               ``streams.exceptions.DependencyUnavailable``)
``--key K``                    the key bytes equal ``K`` (UTF-8)
``--header NAME=VALUE``        some header ``NAME`` has the value ``VALUE`` (UTF-8); repeated,
                               every one must match
``--offsets P:FROM-TO``        partition ``P``, offsets ``FROM`` to ``TO`` inclusive
                               (``P:FROM-`` to the end, ``P:N`` one offset); repeated for
                               several partitions, and the partitions not named are left out
=============================  ==============================================================
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from streams.exceptions import BadArgumentError
from streams.replay.timespec import format_ms

if TYPE_CHECKING:
    from streams.replay.letters import Letter

__all__ = ["Filters", "Ranges", "parse_header_filters", "parse_offsets", "restrict"]

# partition -> [start, end): the offsets a command reads, end exclusive
Ranges = dict[int, tuple[int, int]]

_OFFSETS = re.compile(r"^(\d+):(\d+)(?:-(\d*))?$")


@dataclass(frozen=True, slots=True)
class Filters:
    """What a DLQ record must match to be selected; empty fields select everything."""

    since_ms: int | None = None
    until_ms: int | None = None
    reasons: tuple[str, ...] = ()
    error_classes: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    def matches(self, letter: Letter) -> bool:
        """True if ``letter`` passes every filter given."""
        if self.since_ms is not None and letter.timestamp_ms < self.since_ms:
            return False
        if self.until_ms is not None and letter.timestamp_ms >= self.until_ms:
            return False
        if self.reasons and letter.reason not in self.reasons:
            return False
        if self.error_classes and not _class_matches(letter.error_class, self.error_classes):
            return False
        if self.keys and (letter.key or b"").decode("utf-8", "replace") not in self.keys:
            return False
        return not self.headers or all(
            any(n == name and v == value.encode() for n, v in letter.headers)
            for name, value in self.headers
        )

    @property
    def empty(self) -> bool:
        return self == Filters()

    def describe(self) -> str:
        """``since 2026-12-01T10:00:00.000Z, reasons handler`` (or ``none``), for people."""
        parts = []
        for name, value in self.to_dict().items():
            if value is None or value == ():
                continue
            shown = value
            if name.endswith("_ms"):
                shown = format_ms(value)
            elif name == "headers":
                shown = ", ".join(f"{n}={v}" for n, v in value)
            elif isinstance(value, tuple):
                shown = ", ".join(value)
            parts.append(f"{name.removesuffix('_ms')} {shown}")
        return "; ".join(parts) or "none"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Filters:
        return cls(
            since_ms=data.get("since_ms"),
            until_ms=data.get("until_ms"),
            reasons=tuple(data.get("reasons", ())),
            error_classes=tuple(data.get("error_classes", ())),
            keys=tuple(data.get("keys", ())),
            headers=tuple((str(n), str(v)) for n, v in data.get("headers", ())),
        )


def _class_matches(found: str | None, wanted: tuple[str, ...]) -> bool:
    if found is None:
        return False
    return any(found == w or found.endswith(f".{w}") for w in wanted)


def parse_header_filters(values: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``NAME=VALUE`` strings as pairs; a value may itself contain ``=``."""
    pairs = []
    for value in values:
        name, separator, wanted = value.partition("=")
        if not separator or not name:
            raise BadArgumentError(
                f"--header {value!r} is not NAME=VALUE",
                hint="write --header tenant=acme (the value is compared as UTF-8 text)",
            )
        pairs.append((name, wanted))
    return tuple(pairs)


def parse_offsets(values: Iterable[str]) -> dict[int, tuple[int, int | None]]:
    """``P:FROM-TO`` (inclusive), ``P:FROM-`` and ``P:N`` as partition -> [from, to + 1)."""
    found: dict[int, tuple[int, int | None]] = {}
    for value in values:
        match = _OFFSETS.match(value.strip())
        if match is None:
            raise BadArgumentError(
                f"--offsets {value!r} is not P:FROM-TO",
                hint="write 0:100-199 (partition 0, offsets 100 to 199), 0:100- or 0:150",
            )
        partition, first, last = int(match[1]), int(match[2]), match[3]
        end = first + 1 if last is None else (int(last) + 1 if last else None)
        if end is not None and end <= first:
            raise BadArgumentError(f"--offsets {value!r}: TO is before FROM")
        if partition in found:
            raise BadArgumentError(f"--offsets names partition {partition} twice")
        found[partition] = (first, end)
    return found


def restrict(ranges: Ranges, offsets: Mapping[int, tuple[int, int | None]]) -> Ranges:
    """``ranges`` cut to the ``--offsets`` given (all of ``ranges`` when none are)."""
    if not offsets:
        return dict(ranges)
    unknown = sorted(set(offsets) - set(ranges))
    if unknown:
        raise BadArgumentError(
            f"--offsets names partitions {unknown} that the topic does not have "
            f"(partitions: {sorted(ranges)})"
        )
    cut: Ranges = {}
    for partition, (first, end) in offsets.items():
        start, stop = ranges[partition]
        low = min(max(start, first), stop)
        cut[partition] = (low, max(low, min(stop, stop if end is None else end)))
    return cut
