"""`streams local up|down|status|logs|reset`: the local Kafka + schema registry stack."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import click

from streams.cli.output import EXIT_CHECK_FAILED, emit_json, fail_cleanly, say
from streams.localstack.stack import ComponentStatus, LocalStack

__all__ = ["local"]


@click.group()
def local() -> None:
    """Run a real Kafka broker and schema registry on this machine, without Docker.

    State lives in $STREAMS_HOME (default ~/.streams-local); ports: STREAMS_KAFKA_PORT
    (19092), STREAMS_CONTROLLER_PORT (19093), STREAMS_REGISTRY_PORT (18081). `streams local up
    --help` lists every variable.
    """


def _describe(name: str, component: ComponentStatus) -> str:
    if component.ready:
        return f"{name:<16} running  pid {component.pid:<8} {component.address}"
    if component.running:
        return f"{name:<16} starting pid {component.pid:<8} {component.address} (not answering yet)"
    stale = (
        " (stale pid file: `streams local up --clear-stale` removes it and starts afresh)"
        if component.stale_pid_file
        else ""
    )
    return f"{name:<16} stopped{stale}"


@local.command()
@click.option(
    "--clear-stale",
    is_flag=True,
    help="Remove pid files whose process is gone (a crash, kill -9 or reboot) and start afresh.",
)
@fail_cleanly
def up(clear_stale: bool) -> None:
    """Start the broker and the registry (downloading them once) and wait until both answer.

    Kafka 4.1.2 (KRaft, one node) and Apicurio Registry 3.3.3 run with java from Maven
    Central's jars: Java 17+ for the broker, 21+ for the registry, and mvn for the first
    download (about 235 MB, kept in $STREAMS_HOME/lib).

    A pid file whose process is gone stops `up` with exit 1, so that a crash is not passed over
    silently: read `streams local logs kafka` (or `registry`), then run `up --clear-stale`.

    \b
    Environment:
      STREAMS_HOME             state folder: jars, data, logs, pid files [~/.streams-local]
      STREAMS_KAFKA_PORT       the broker's port [19092]
      STREAMS_CONTROLLER_PORT  the KRaft controller's port [19093]
      STREAMS_REGISTRY_PORT    the registry's port [18081]; its health port is this + 1
      STREAMS_JAVA_HOME        the broker's JDK (else JAVA_HOME, PATH, /usr/lib/jvm/*)
      STREAMS_REGISTRY_JAVA_HOME  the registry's JDK, 21+
      STREAMS_MAVEN_COMMAND    mvn [mvn]

    Clients follow the ports: without STREAMS_BOOTSTRAP_SERVERS, every `streams` command
    dials 127.0.0.1:$STREAMS_KAFKA_PORT.
    """
    stack = LocalStack()
    report = stack.up(progress=lambda message: say(message, err=True), clear_stale=clear_stale)
    status = report.status
    if not report.started:
        say("local stack already running:")
    else:
        say(f"local stack up in {report.seconds:.1f} s:")
    say(_describe("kafka", status.kafka))
    say(_describe("schema registry", status.schema_registry))
    say(f"bootstrap servers:   {status.bootstrap_servers}")
    say(f"schema registry url: {status.schema_registry_url}")
    say(f"state folder:        {status.home}")


@local.command()
@fail_cleanly
def down() -> None:
    """Stop the broker and the registry (SIGTERM, wait, then report)."""
    for name, pid, outcome in LocalStack().down():
        say(f"{name:<16} {outcome}" + (f" (pid {pid})" if pid else ""))


@local.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@fail_cleanly
def status(as_json: bool) -> None:
    """Show whether the broker and the registry run and answer. Exit 3 if either does not."""
    current = LocalStack().status()
    if as_json:
        payload = current.to_dict()
        payload["running"] = current.running
        emit_json(payload)
    else:
        say(_describe("kafka", current.kafka))
        say(_describe("schema registry", current.schema_registry))
        say(f"state folder:        {current.home}")
    if not current.running:
        sys.exit(EXIT_CHECK_FAILED)


@local.command()
@click.argument("component", type=click.Choice(["kafka", "registry"]), default="kafka")
@click.option("-n", "--lines", default=50, show_default=True, help="How many lines to show.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl-C to stop).")
@fail_cleanly
def logs(component: str, lines: int, follow: bool) -> None:
    """Show the log of the broker or the registry."""
    path = LocalStack().log_file(component)
    if not path.exists():
        say(f"no log yet at {path}: the {component} has not been started", err=True)
        sys.exit(EXIT_CHECK_FAILED)
    argv = ["tail", "-n", str(lines), *(["-F"] if follow else []), str(path)]
    with contextlib.suppress(KeyboardInterrupt):
        subprocess.run(argv, check=False)


@local.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@fail_cleanly
def reset(yes: bool) -> None:
    """Stop the stack and delete its topics, schemas and logs (downloads are kept)."""
    stack = LocalStack()
    if not yes:
        if not sys.stdin.isatty():
            say("error: refusing to delete local data without confirmation", err=True)
            say("hint: pass --yes", err=True)
            sys.exit(1)
        click.confirm(
            f"Delete all topics, schemas and logs under {stack.settings.home}?", abort=True
        )
    for path in stack.reset():
        say(f"removed {path}")
