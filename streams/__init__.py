"""Resilient Kafka stream pipelines: exactly-once stages, retry topics, dead-letter topics."""

from __future__ import annotations

from streams.exceptions import StreamsError

__all__ = ["StreamsError", "__version__"]

__version__ = "0.1.0"
