"""Times and durations as operators write them: ISO-8601, relative (``2h``), or ``now``.

=====================  ===============================================================
``2026-12-01T10:00``   a time; without a zone it is UTC (as ``kafka-consumer-groups``)
``2026-12-01T10:00Z``  the same; ``+01:00`` and other offsets are honoured
``2026-12-01``         midnight UTC of that day
``2h``, ``1h30m``      that long ago (units ``ms s m h d w``); ``now`` is now
``PT2H``, ``P1DT2H``   ISO-8601 durations, for ``--by-duration`` (the same as ``2h``...)
=====================  ===============================================================
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from streams.exceptions import BadArgumentError

__all__ = ["format_ms", "parse_duration", "parse_time"]

_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_RELATIVE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_ISO_DURATION = re.compile(
    r"^P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
_FORMS = "an ISO-8601 time (2026-12-01T10:00, UTC unless it names a zone), 2h / 1h30m ago, or now"


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``2h``, ``1h30m``, ``90s``, or ISO-8601 ``PT2H`` / ``P1DT2H``."""
    value = text.strip()
    if _RELATIVE.match(value):
        return sum(float(n) * _UNITS_S[unit] for n, unit in _PART.findall(value))
    iso = _ISO_DURATION.match(value.upper())
    if iso and value.upper() not in {"P", "PT"}:
        parts = {k: float(v) if v else 0.0 for k, v in iso.groupdict().items()}
        return (
            parts["w"] * 604800 + parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60
        ) + parts["s"]
    raise BadArgumentError(
        f"{text!r} is not a duration",
        hint="write 2h, 1h30m, 45s, 3d, or an ISO-8601 duration such as PT2H or P1DT12H",
    )


def parse_time(text: str, *, now_ms: int) -> int:
    """Milliseconds since the epoch for ``text`` (see the module docstring for the forms)."""
    value = text.strip()
    if value.lower() == "now":
        return now_ms
    if _RELATIVE.match(value):
        return now_ms - round(parse_duration(value) * 1000)
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise BadArgumentError(f"{text!r} is not a time", hint=f"write {_FORMS}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # as kafka-consumer-groups: no zone means UTC
    return round(moment.timestamp() * 1000)


def format_ms(ms: int | None) -> str:
    """``2026-12-01T10:00:00.123Z`` (UTC), or ``-`` for None."""
    if ms is None:
        return "-"
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
