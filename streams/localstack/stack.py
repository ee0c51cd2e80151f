"""The local stack: one Kafka broker and one schema registry on loopback, without Docker.

State lives in one folder, ``$STREAMS_HOME`` (default ``~/.streams-local``)::

    lib/kafka-<v>/          broker jars from Maven Central (kept by `reset`)
    lib/apicurio-<v>/       registry distribution (kept by `reset`)
    kafka/                  server.properties, log4j2.yaml, data/ (topic logs)
    registry/               the registry's H2 database (schemas)
    logs/                   kafka.log, registry.log
    run/                    kafka.pid, registry.pid

When ``up`` fails, ``streams local logs kafka`` / ``streams local logs registry`` show why.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streams.config import LocalStackSettings
from streams.exceptions import LocalStackError
from streams.localstack.components import KafkaBroker, SchemaRegistry
from streams.localstack.jdk import JavaRuntime
from streams.localstack.process import (
    ManagedProcess,
    free_port,
    free_ports,
    port_is_free,
    process_alive,
)

__all__ = ["ComponentStatus", "LocalStack", "StackStatus", "UpReport"]

Progress = Callable[[str], None]


def _silent(_message: str) -> None:
    return


@dataclass(frozen=True)
class ComponentStatus:
    running: bool
    pid: int | None
    ready: bool
    address: str
    log_file: str
    stale_pid_file: bool = False


@dataclass(frozen=True)
class StackStatus:
    bootstrap_servers: str
    schema_registry_url: str
    home: str
    kafka: ComponentStatus
    schema_registry: ComponentStatus

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def running(self) -> bool:
        return self.kafka.ready and self.schema_registry.ready


@dataclass
class UpReport:
    status: StackStatus
    already_running: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    cleared_stale: list[str] = field(default_factory=list)
    downloaded: list[str] = field(default_factory=list)
    seconds: float = 0.0


class LocalStack:
    """Bring the local Kafka broker and schema registry up and down."""

    def __init__(self, settings: LocalStackSettings | None = None) -> None:
        self.settings = settings or LocalStackSettings()
        self.kafka = KafkaBroker(self.settings)
        self.registry = SchemaRegistry(self.settings)

    @classmethod
    def private(cls, home: Path) -> LocalStack:
        """A stack of its own in ``home``, on free ports, sharing the default home's jar cache.

        For test sessions and chaos runs: it never touches the state, the pid files or the ports
        of the stack a developer runs in ``$STREAMS_HOME``, and it downloads nothing that the
        shared cache already holds (a first download lands in the shared cache too).
        """
        shared_lib = LocalStackSettings().home / "lib"
        shared_lib.mkdir(parents=True, exist_ok=True)
        home.mkdir(parents=True, exist_ok=True)
        if not (home / "lib").exists():
            (home / "lib").symlink_to(shared_lib)
        kafka_port, controller_port = free_ports(2)
        registry_port = free_port()
        # the registry also listens on port + 1 (health); look until that one is free as well
        while not port_is_free("127.0.0.1", registry_port + 1) or registry_port + 1 in (
            kafka_port,
            controller_port,
        ):
            registry_port = free_port()
        return cls(
            LocalStackSettings(
                home=home,
                kafka_port=kafka_port,
                controller_port=controller_port,
                registry_port=registry_port,
            )
        )

    # -- status -----------------------------------------------------------------------------

    def status(self) -> StackStatus:
        return StackStatus(
            bootstrap_servers=self.settings.bootstrap_servers,
            schema_registry_url=self.settings.schema_registry_url,
            home=str(self.settings.home),
            kafka=self._component_status(
                self.kafka.process, self.settings.bootstrap_servers, self.kafka.answers
            ),
            schema_registry=self._component_status(
                self.registry.process, self.settings.schema_registry_url, self.registry.answers
            ),
        )

    @staticmethod
    def _component_status(
        process: ManagedProcess, address: str, answers: Callable[[], bool]
    ) -> ComponentStatus:
        pid = process.running_pid()
        stale = pid is None and process.pid_file.exists()
        return ComponentStatus(
            running=pid is not None,
            pid=pid,
            ready=pid is not None and answers(),
            address=address,
            log_file=str(process.log_file),
            stale_pid_file=stale,
        )

    # -- up ---------------------------------------------------------------------------------

    # Over 50 lines: the start-up is one sequence (prerequisites, broker, registry, report) that
    # reads best in order; its steps are methods of the components.
    def up(
        self, progress: Progress = _silent, *, with_registry: bool = True, clear_stale: bool = False
    ) -> UpReport:
        """Start whatever is not running and wait until both answer.

        ``with_registry=False`` starts and waits for the broker only (tests that need no
        schemas, and that restart their own broker).

        Idempotent: components that already run are reported, not restarted. Raises a
        LocalStackError subclass, with a hint, for a stale pid file, a port in use, a missing
        java or mvn, an unreachable repository, or a component that does not come up in time.

        A stale pid file (left by a crash, a ``kill -9`` or a reboot) stops ``up`` unless
        ``clear_stale`` is set: then the file is removed, the removal is reported through
        ``progress`` and in ``UpReport.cleared_stale``, and the component starts afresh on its
        existing data (Kafka recovers its logs as after any unclean shutdown).
        """
        began = time.monotonic()
        report = UpReport(status=self.status())
        if clear_stale:
            report.cleared_stale = self._clear_stale(progress)
        kafka_pid = self.kafka.process.pid()  # raises StalePidFileError
        registry_pid = self.registry.process.pid() if with_registry else -1
        if kafka_pid is not None:
            report.already_running.append("kafka")
        if registry_pid is not None and with_registry:
            report.already_running.append("schema registry")

        kafka_java = self._prepare_kafka() if kafka_pid is None else None
        registry_java = self._prepare_registry() if registry_pid is None else None

        if kafka_java is not None:
            version = self.settings.kafka_version
            folder = self.kafka.lib_dir
            if _fetch(self.kafka, "kafka", f"{version} jars", folder, "75 MB", progress=progress):
                report.downloaded.append(f"kafka {version}")
            self.kafka.write_config()
            if self.kafka.format_storage(kafka_java):
                progress(f"kafka: formatted {self.kafka.data_dir}")
            self.kafka.process.spawn(self.kafka.command(kafka_java), cwd=self.settings.home)
            report.started.append("kafka")
        if registry_java is not None:
            version = self.settings.apicurio_version
            what, folder = f"Apicurio {version}", self.registry.app_dir
            if _fetch(self.registry, "schema registry", what, folder, "160 MB", progress=progress):
                report.downloaded.append(f"apicurio {version}")
            (self.settings.home / "registry").mkdir(parents=True, exist_ok=True)
            self.registry.process.spawn(
                self.registry.command(registry_java), cwd=self.settings.home
            )
            report.started.append("schema registry")

        self._wait_ready(progress, with_registry=with_registry)
        report.status = self.status()
        report.seconds = time.monotonic() - began
        return report

    def _prepare_kafka(self) -> JavaRuntime:
        """The broker's java, once its ports are known to be free (raises otherwise)."""
        java = self.kafka.java()
        host = self.settings.host
        self.kafka.process.require_port(host, self.settings.kafka_port, "STREAMS_KAFKA_PORT")
        self.kafka.process.require_port(
            host, self.settings.controller_port, "STREAMS_CONTROLLER_PORT"
        )
        return java

    def _prepare_registry(self) -> JavaRuntime:
        """The registry's java (21+), once its two ports are known to be free."""
        java = self.registry.java()
        host = self.settings.host
        self.registry.process.require_port(
            host, self.settings.registry_port, "STREAMS_REGISTRY_PORT"
        )
        self.registry.process.require_port(
            host, self.registry.management_port, "STREAMS_REGISTRY_PORT (+1)"
        )
        return java

    def _clear_stale(self, progress: Progress) -> list[str]:
        """Remove the pid files whose process is gone; the names of the components cleared."""
        cleared = []
        for name, process in (
            ("kafka", self.kafka.process),
            ("schema registry", self.registry.process),
        ):
            recorded = process.recorded_pid()
            if process.clear_stale():
                cleared.append(name)
                progress(
                    f"{name}: removed a stale pid file (process {recorded} no longer runs; "
                    f"why it stopped may be in {process.log_file})"
                )
        return cleared

    def _wait_ready(self, progress: Progress, *, with_registry: bool = True) -> None:
        deadline = time.monotonic() + self.settings.start_timeout_s
        waiting = {"kafka": (self.kafka.process, self.kafka.answers)}
        if with_registry:
            waiting["schema registry"] = (self.registry.process, self.registry.answers)
        while waiting:
            for name, (process, answers) in list(waiting.items()):
                # the raw pid: right after the spawn the java launcher may still be re-executing
                # itself, and its command line does not yet show what running_pid() looks for
                pid = process.recorded_pid()
                if pid is None or not process_alive(pid):
                    raise LocalStackError(
                        f"{name} exited during start-up: {_tail(process.log_file)}",
                        hint=f"see the whole log: {process.log_file}",
                    )
                if answers():
                    progress(f"{name}: ready")
                    del waiting[name]
            if waiting and time.monotonic() > deadline:
                names = ", ".join(waiting)
                self.down()
                raise LocalStackError(
                    f"{names} did not answer within {self.settings.start_timeout_s:.0f} s "
                    "(stopped again)",
                    hint="see `streams local logs`; raise STREAMS_START_TIMEOUT_S if slow",
                )
            if waiting:
                time.sleep(0.5)

    # -- down / reset / logs ----------------------------------------------------------------

    def down(self) -> list[tuple[str, int | None, str]]:
        """Stop both (SIGTERM, wait, SIGKILL after the stop timeout); returns what happened."""
        results = []
        for name, process in (
            ("schema registry", self.registry.process),
            ("kafka", self.kafka.process),
        ):
            pid, outcome = process.stop(self.settings.stop_timeout_s)
            results.append((name, pid, outcome))
        return results

    def reset(self) -> list[Path]:
        """Stop the stack and delete its data and logs; the downloaded jars are kept."""
        self.down()
        removed = []
        for sub in ("kafka", "registry", "logs", "run"):
            path = self.settings.home / sub
            if path.exists():
                shutil.rmtree(path)
                removed.append(path)
        return removed

    def log_file(self, component: str) -> Path:
        return {"kafka": self.kafka.process, "registry": self.registry.process}[component].log_file


def _fetch(
    component: KafkaBroker | SchemaRegistry,
    name: str,
    what: str,
    folder: Path,
    size: str,
    *,
    progress: Progress,
) -> bool:
    """Say whether ``component`` is cached or is being downloaded, then fetch it if needed."""
    if component.cached:
        progress(f"{name}: using cached {what} ({folder})")
        return False
    progress(
        f"{name}: downloading {what} from Maven Central (about {size}, once; kept in {folder})"
    )
    return component.fetch(progress)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(line.strip() for line in text[-lines:])
