"""Options shared by the commands that talk to Kafka: where the cluster is.

``@connection_options`` adds ``--bootstrap-servers`` and ``--profile`` and hands the command a
``kafka: KafkaSettings`` built with the documented precedence (flag > environment > profile >
streams.toml > the local stack; ``streams.config``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from streams.config import KafkaSettings

__all__ = ["PIPELINE_HELP", "connection_options", "pipeline_option"]

R = TypeVar("R")

PIPELINE_HELP = (
    "MODULE:PIPELINE, e.g. shop:pipeline (shop.py in the working directory or on PYTHONPATH)."
)


def connection_options(func: Callable[..., R]) -> Callable[..., R]:
    """Add --bootstrap-servers and --profile; the command receives ``kafka``."""

    @click.option(
        "--bootstrap-servers",
        metavar="HOST:PORT[,...]",
        help="Kafka brokers [default: STREAMS_BOOTSTRAP_SERVERS, the profile, streams.toml, "
        "else the local stack's 127.0.0.1:19092].",
    )
    @click.option(
        "--profile",
        metavar="NAME",
        help="Connection profile: [profiles.NAME] of streams.toml or [NAME] of "
        "~/.config/streams/profiles.toml [default: STREAMS_PROFILE].",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, bootstrap_servers: str | None, profile: str | None, **kwargs: Any) -> R:
        overrides: dict[str, Any] = {}
        if bootstrap_servers:
            overrides["bootstrap_servers"] = bootstrap_servers
        if profile:
            overrides["profile"] = profile
        kwargs["kafka"] = KafkaSettings(**overrides)
        return func(*args, **kwargs)

    return wrapper


def pipeline_option(help_text: str) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """``--pipeline MODULE:PIPELINE`` (optional)."""
    return click.option("--pipeline", "pipeline_ref", metavar="MODULE:PIPELINE", help=help_text)
