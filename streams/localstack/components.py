"""The two programs of the local stack: an Apache Kafka broker and an Apicurio schema registry.

Each component knows how to fetch its runtime, build its command line and tell whether it
answers. The orchestration (order, waiting, reporting) lives in ``stack``.
"""

from __future__ import annotations

import base64
import string
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from streams.config import LocalStackSettings
from streams.exceptions import LocalStackError
from streams.localstack.fetch import fetch_with_maven, is_complete, unpack_tarball
from streams.localstack.jdk import JavaRuntime, find_java
from streams.localstack.process import ManagedProcess

__all__ = ["KafkaBroker", "SchemaRegistry", "ops_dir"]


def _silent(_message: str) -> None:
    return


# The JVM flags of bin/kafka-run-class.sh (KAFKA_JVM_PERFORMANCE_OPTS).
_KAFKA_JVM_FLAGS = [
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
]
KAFKA_MIN_JAVA = 17
# Apicurio Registry 3.3 classes are compiled for Java 21 (class file version 65).
REGISTRY_MIN_JAVA = 21


def ops_dir() -> Path:
    """The ops/ folder with the poms and templates (in a checkout, or packed into the wheel)."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[1] / "_ops", here.parents[2] / "ops"):
        if (candidate / "kafka" / "pom.xml").exists():
            return candidate
    raise LocalStackError(
        "cannot find the ops/ folder with the local stack's poms and templates",
        hint="run from a checkout of the project, or reinstall the package",
    )


@dataclass(frozen=True)
class KafkaBroker:
    """A single-node KRaft broker + controller on loopback, run from Maven Central jars."""

    settings: LocalStackSettings

    @property
    def process(self) -> ManagedProcess:
        home = self.settings.home
        return ManagedProcess(
            "kafka", home / "run" / "kafka.pid", home / "logs" / "kafka.log", "kafka.Kafka"
        )

    @property
    def lib_dir(self) -> Path:
        return self.settings.home / "lib" / f"kafka-{self.settings.kafka_version}"

    @property
    def config_dir(self) -> Path:
        return self.settings.home / "kafka"

    @property
    def data_dir(self) -> Path:
        return self.settings.home / "kafka" / "data"

    def java(self) -> JavaRuntime:
        return find_java(KAFKA_MIN_JAVA, purpose="the Kafka broker", env_var="STREAMS_JAVA_HOME")

    @property
    def cached(self) -> bool:
        """True when the jars were downloaded before (``fetch`` has nothing to do)."""
        return is_complete(self.lib_dir)

    def fetch(self, progress: Callable[[str], None] = _silent) -> bool:
        """Download the jars unless cached; True if a download happened."""
        if self.cached:
            return False
        fetch_with_maven(
            mvn=self.settings.maven_command,
            pom=ops_dir() / "kafka" / "pom.xml",
            output=self.lib_dir,
            properties={
                "kafka.version": self.settings.kafka_version,
                "log4j2.version": self.settings.log4j2_version,
                "includeScope": "runtime",
            },
            extra=[],
            label="kafka",
            progress=progress,
        )
        return True

    def classpath(self) -> str:
        return f"{self.lib_dir}/*"

    def write_config(self) -> Path:
        template = string.Template((ops_dir() / "kafka" / "server.properties.template").read_text())
        text = template.substitute(
            host=self.settings.host,
            kafka_port=self.settings.kafka_port,
            controller_port=self.settings.controller_port,
            data_dir=self.data_dir,
            # one partition each: a single-node development broker, and 100 fewer logs at start
            offsets_partitions=1,
            txn_partitions=1,
        )
        self.config_dir.mkdir(parents=True, exist_ok=True)
        properties = self.config_dir / "server.properties"
        properties.write_text(text)
        (self.config_dir / "log4j2.yaml").write_text(
            (ops_dir() / "kafka" / "log4j2.yaml").read_text()
        )
        return properties

    def _jvm_common(self) -> list[str]:
        return [
            f"-Dkafka.logs.dir={self.settings.home / 'logs'}",
            f"-Dlog4j2.configurationFile={self.config_dir / 'log4j2.yaml'}",
            "-cp",
            self.classpath(),
        ]

    def format_storage(self, java: JavaRuntime) -> bool:
        """Format the data folder once (KRaft needs a cluster id); True if it formatted."""
        if (self.data_dir / "meta.properties").exists():
            return False
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        argv = [
            str(java.path),
            "-Xmx256m",
            *self._jvm_common(),
            "kafka.tools.StorageTool",
            "format",
            "--ignore-formatted",
            # one argument: an id that starts with "-" (base64 does, 1 in 64) is not an option
            f"--cluster-id={cluster_id}",
            "-c",
            str(self.config_dir / "server.properties"),
        ]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
            raise LocalStackError(f"formatting the Kafka data folder failed: {' | '.join(tail)}")
        return True

    def command(self, java: JavaRuntime) -> list[str]:
        return [
            str(java.path),
            *self.settings.kafka_heap.split(),
            *_KAFKA_JVM_FLAGS,
            *self._jvm_common(),
            "kafka.Kafka",
            str(self.config_dir / "server.properties"),
        ]

    def answers(self) -> bool:
        """True when a metadata request to the broker succeeds."""
        from confluent_kafka.admin import AdminClient  # noqa: PLC0415 - slow import, only when asked

        config: dict[str, Any] = {
            "bootstrap.servers": self.settings.bootstrap_servers,
            "log_level": 0,
            "logger": _Quiet(),
        }
        admin = AdminClient(config)
        try:
            metadata = admin.list_topics(timeout=2)
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            return False
        return bool(metadata.brokers)


class _Quiet:
    """A logger for probe clients: librdkafka's connection-refused noise while the broker starts."""

    def log(self, *_args: object, **_kwargs: object) -> None:
        return

    def debug(self, *_args: object, **_kwargs: object) -> None:
        return

    info = warning = error = exception = critical = debug


@dataclass(frozen=True)
class SchemaRegistry:
    """Apicurio Registry 3.x (Confluent-compatible API at /apis/ccompat/v7), schemas kept in H2."""

    settings: LocalStackSettings

    @property
    def process(self) -> ManagedProcess:
        home = self.settings.home
        return ManagedProcess(
            "schema registry",
            home / "run" / "registry.pid",
            home / "logs" / "registry.log",
            "quarkus-run.jar",
        )

    @property
    def management_port(self) -> int:
        return self.settings.registry_port + 1

    @property
    def download_dir(self) -> Path:
        return self.settings.home / "lib" / f"apicurio-{self.settings.apicurio_version}-download"

    @property
    def app_dir(self) -> Path:
        return self.settings.home / "lib" / f"apicurio-{self.settings.apicurio_version}"

    def java(self) -> JavaRuntime:
        return find_java(
            REGISTRY_MIN_JAVA,
            purpose=f"the schema registry (Apicurio {self.settings.apicurio_version})",
            env_var="STREAMS_REGISTRY_JAVA_HOME",
        )

    @property
    def cached(self) -> bool:
        """True when the distribution was downloaded and unpacked before."""
        return is_complete(self.app_dir)

    def fetch(self, progress: Callable[[str], None] = _silent) -> bool:
        """Download and unpack the distribution unless cached; True if a download happened."""
        if self.cached:
            return False
        fetch_with_maven(
            mvn=self.settings.maven_command,
            pom=ops_dir() / "registry" / "pom.xml",
            output=self.download_dir,
            properties={
                "apicurio.version": self.settings.apicurio_version,
                "includeTypes": "tar.gz",
            },
            extra=[],
            label="schema registry",
            progress=progress,
        )
        unpack_tarball(self.download_dir, self.app_dir)
        return True

    def command(self, java: JavaRuntime) -> list[str]:
        db = self.settings.home / "registry" / "registry"
        return [
            str(java.path),
            *self.settings.registry_heap.split(),
            # SerialGC: one small heap on a 2-core box; G1's threads buy nothing here
            "-XX:+UseSerialGC",
            f"-Dquarkus.http.host={self.settings.host}",
            f"-Dquarkus.http.port={self.settings.registry_port}",
            f"-Dquarkus.management.host={self.settings.host}",
            f"-Dquarkus.management.port={self.management_port}",
            # schemas survive a restart, like the broker's data (the default is in-memory H2)
            f"-Dapicurio.datasource.url=jdbc:h2:file:{db}",
            # let tests and `streams local reset` delete subjects
            "-Dapicurio.rest.deletion.group.enabled=true",
            "-Dapicurio.rest.deletion.artifact.enabled=true",
            "-Dapicurio.rest.deletion.artifact-version.enabled=true",
            "-jar",
            str(self.app_dir / "quarkus-run.jar"),
        ]

    def answers(self) -> bool:
        """True when the health check says UP and the ccompat API lists subjects."""
        health = f"http://{self.settings.host}:{self.management_port}/health/ready"
        subjects = f"{self.settings.schema_registry_url}/subjects"
        return _http_ok(health) and _http_ok(subjects)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback URL we built
            return int(response.status) == HTTPStatus.OK
    except (urllib.error.URLError, OSError, ValueError):
        return False
