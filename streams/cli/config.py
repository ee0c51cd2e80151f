"""`streams config show`: the connection settings in effect, and where each one came from."""

from __future__ import annotations

import json

import click

from streams.cli.options import connection_options
from streams.cli.output import emit_json, fail_cleanly, say, style
from streams.config import ConfigFileSettings, KafkaSettings

__all__ = ["config"]


@click.group()
def config() -> None:
    """The connection settings: flags, environment, profiles and streams.toml.

    \b
    Precedence, highest first:
      1. a flag: --bootstrap-servers, --profile
      2. the environment: STREAMS_BOOTSTRAP_SERVERS, STREAMS_SCHEMA_REGISTRY_URL, ...
      3. the profile (--profile or STREAMS_PROFILE): [profiles.NAME] of streams.toml,
         else [NAME] of ~/.config/streams/profiles.toml
      4. the top-level keys of streams.toml (the working directory or the nearest parent)
      5. the defaults: the local stack (streams local up)
    """


@config.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@fail_cleanly
@connection_options
def show(as_json: bool, kafka: KafkaSettings) -> None:
    """Show each connection setting, its value (secrets masked) and where it came from."""
    files = ConfigFileSettings()
    project = files.project_file()
    profiles = files.profiles_file()
    shown = kafka.shown()
    if as_json:
        emit_json(
            {
                "settings": {name: {"value": v, "from": o} for name, (v, o) in shown.items()},
                "project_file": None if project is None else str(project),
                "profiles_file": str(profiles) if profiles.is_file() else None,
            }
        )
        return
    texts = {
        name: "-" if value in (None, {}) else value if isinstance(value, str) else json.dumps(value)
        for name, (value, _) in shown.items()
    }
    width = max(len(name) for name in shown)
    value_width = max(len(text) for text in texts.values())
    for name, (_, origin) in shown.items():
        say(f"{name:<{width}}  {texts[name]:<{value_width}}  {style(origin, dim=True)}")
    say(f"project file:  {project or 'none (no streams.toml here or above)'}")
    say(f"profiles file: {profiles}{'' if profiles.is_file() else ' (none)'}")
