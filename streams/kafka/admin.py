"""Typed access to the parts of confluent_kafka's admin API that ship without usable types.

``confluent_kafka.admin`` re-exports ``OffsetSpec`` without listing it in ``__all__``, and its
constructors carry no annotations, so ``mypy --strict`` rejects both the import and every call.
This module is the one place that deals with that; everything else asks for offset specs here
and never imports a private ``confluent_kafka`` module.
"""

from __future__ import annotations

from typing import Any

import confluent_kafka.admin

__all__ = ["earliest", "latest"]

# the public re-export (confluent_kafka.admin.OffsetSpec), typed as Any on purpose: see above
_OFFSET_SPEC: Any = confluent_kafka.admin.OffsetSpec  # type: ignore[attr-defined]


# Any, not object: AdminClient.list_offsets is annotated with the private OffsetSpec class,
# which only this module may name, and it does so through the Any above


def earliest() -> Any:
    """``OffsetSpec.earliest()``: ListOffsets answers the log start offset."""
    return _OFFSET_SPEC.earliest()


def latest() -> Any:
    """``OffsetSpec.latest()``: the high watermark, or the LSO when asked as read_committed."""
    return _OFFSET_SPEC.latest()
