"""faust-streaming agents under the same topic contract: ``streams.agents.faust_stage``."""

from __future__ import annotations

from streams.agents.faust_stage import FaustRunner, check_faust

__all__ = ["FaustRunner", "check_faust"]
