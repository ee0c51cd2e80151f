"""Typed, frozen settings, read from the environment here and nowhere else.

Every setting has an environment variable named ``STREAMS_<FIELD>`` (upper case). Values given
as arguments win over the environment. Raw librdkafka settings, for anything not modelled here,
go through ``STREAMS_KAFKA_EXTRA`` as JSON (for example ``{"security.protocol": "SSL"}``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "CLIENT_LOGGER",
    "JavaSettings",
    "KafkaSettings",
    "LocalStackSettings",
    "LogSettings",
    "SchemaSettings",
    "SinkSettings",
    "StageSettings",
    "StateSettings",
    "default_home",
]


# Where librdkafka's own log lines go (the ``logger`` setting of every client): through Python's
# logging, so that they are formatted, leveled, and their repeats collapsed like ours
# (streams.runtime.logs), instead of hundreds of raw lines on stderr. One-shot commands of the
# CLI silence it: their error line says what failed.
CLIENT_LOGGER = "streams.kafka.client"


def default_home() -> Path:
    """The folder that holds the local stack's jars, data, logs and pid files."""
    return Path.home() / ".streams-local"


class LocalStackSettings(BaseSettings):
    """Where and how the local Kafka broker and schema registry run.

    Environment: ``STREAMS_HOME`` (the state folder), ``STREAMS_KAFKA_PORT``,
    ``STREAMS_CONTROLLER_PORT``, ``STREAMS_REGISTRY_PORT``, ``STREAMS_KAFKA_VERSION``, ...
    """

    model_config = SettingsConfigDict(env_prefix="STREAMS_", frozen=True, extra="ignore")

    home: Path = Field(default_factory=default_home)
    host: str = "127.0.0.1"
    kafka_port: int = 19092
    controller_port: int = 19093
    registry_port: int = 18081
    # 4.1.2: the newest 4.1 patch; 4.0.0 lacks JoinGroup v0/v1 (KAFKA-19444) and log4j-core.
    kafka_version: str = "4.1.2"
    # Kafka 4.1 pins log4j2 2.24.3; the broker's pom adds these jars by hand.
    log4j2_version: str = "2.24.3"
    apicurio_version: str = "3.3.3"
    # 1 GiB is kafka-server-start.sh's own cap; a test load on 2 cores stays far below it.
    kafka_heap: str = "-Xms256m -Xmx1g"
    registry_heap: str = "-Xms64m -Xmx384m"
    # Cold start on 2 cores: about 10 s for the broker, 10-20 s for the registry; 180 s leaves
    # room for a loaded CI machine without hanging forever on a broker that will never answer.
    start_timeout_s: float = 180.0
    stop_timeout_s: float = 60.0
    maven_command: str = "mvn"

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def registry_base_url(self) -> str:
        return f"http://{self.host}:{self.registry_port}"

    @property
    def schema_registry_url(self) -> str:
        return f"{self.registry_base_url}/apis/ccompat/v7"


class KafkaSettings(BaseSettings):
    """How clients reach Kafka and the schema registry.

    Environment: ``STREAMS_BOOTSTRAP_SERVERS``, ``STREAMS_SCHEMA_REGISTRY_URL``,
    ``STREAMS_SASL_USERNAME`` / ``STREAMS_SASL_PASSWORD``, ``STREAMS_KAFKA_EXTRA`` (JSON).
    """

    model_config = SettingsConfigDict(env_prefix="STREAMS_", frozen=True, extra="ignore")

    # Unset, they follow the local stack's settings (STREAMS_KAFKA_PORT, STREAMS_REGISTRY_PORT),
    # so that one override moves the stack and its clients together.
    bootstrap_servers: str = Field(default_factory=lambda: LocalStackSettings().bootstrap_servers)
    schema_registry_url: str = Field(
        default_factory=lambda: LocalStackSettings().schema_registry_url
    )
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    kafka_extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def bootstrap_source(self) -> str:
        """Where ``bootstrap_servers`` came from, for the first log line of every worker.

        Unset, the servers are the local stack's (``streams local up``); a worker meant for a
        real cluster that logs this has not been given STREAMS_BOOTSTRAP_SERVERS.
        """
        if "bootstrap_servers" in self.model_fields_set:
            return "STREAMS_BOOTSTRAP_SERVERS"
        return (
            "default: the local stack's port (STREAMS_BOOTSTRAP_SERVERS is not set; "
            "set it to reach another cluster)"
        )

    def client_config(self) -> dict[str, Any]:
        """The librdkafka settings common to every client (dotted keys)."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "logger": logging.getLogger(CLIENT_LOGGER),
        }
        if self.security_protocol:
            config["security.protocol"] = self.security_protocol
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            config["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            config["sasl.password"] = self.sasl_password.get_secret_value()
        config.update(self.kafka_extra)
        return config


class StageSettings(BaseSettings):
    """How a stage worker batches, commits and stops. Environment: ``STREAMS_STAGE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="STREAMS_STAGE_", frozen=True, extra="ignore")

    # A transaction ends at whichever comes first. 5,000 records / 100 ms: a one-stage copy
    # runs 1,000 records in about 12 ms, so a commit (3-15 ms on the local broker) cost a third
    # of the time at 1,000; at 5,000 the same stage ran at 113-119k instead of 65-80k rec/s
    # (bench/README.md). 100 ms bounds the latency one stage adds, as Kafka Streams' EOS
    # default, and is the bound that ends the batch at any lower rate.
    batch_max_records: int = 5000
    batch_max_ms: int = 100
    # Records asked of librdkafka per consume() call; larger calls amortise the Python overhead.
    consume_max_records: int = 500
    # Short, so that a crashed worker's open transaction stops holding back read_committed
    # readers (the LSO) soon; must stay well above a batch's worst processing + commit time.
    transaction_timeout_ms: int = 30000
    # Retriable errors in init/send_offsets/commit/abort are retried for this long.
    transaction_deadline_s: float = 20.0
    # 10 s: a SIGKILLed worker's partitions move to a live one within about 10 s (default 45 s).
    session_timeout_ms: int = 10000
    # Static membership (group.instance.id = "<group>.<slot>"): a worker restarted on the same
    # slot gets its partitions back at once, without a rebalance. A stopped worker's partitions
    # then wait for session_timeout_ms before they move. For StatefulSet-like deployments.
    static_membership: bool = False
    max_poll_interval_ms: int = 300000
    # SIGTERM: finish the batch in flight and commit within this long, else abort and exit.
    shutdown_deadline_s: float = 30.0
    # how often a worker logs and publishes its counters (the dashboard refreshes from them)
    stats_interval_s: float = 5.0
    # A worker whose loop has not turned for this long exits (1) to be restarted. Well above
    # the longest legitimate pause: a commit retried for transaction_deadline_s, a rewind's
    # committed() call (30 s), a handler batch.
    watchdog_s: float = 120.0
    # The largest record the stage writes to any topic. Unset: each destination topic's own
    # max.message.bytes, read at start-up (the broker's default is about 1 MiB). An output over
    # the limit sends its input record to the DLQ (reason output-rejected); a retry or DLQ
    # record over it goes to the DLQ cut to fit (reason unroutable).
    max_message_bytes: int | None = None


class SinkSettings(BaseSettings):
    """Where a sink writes. Environment: ``STREAMS_SINK_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="STREAMS_SINK_", frozen=True, extra="ignore")

    # Overrides SinkSpec.database, so that one declaration runs against each environment's DB.
    database_url: str | None = None
    # SQLite allows one writer at a time; 30 s lets a second worker wait out a batch commit
    # instead of failing with "database is locked".
    sqlite_busy_timeout_ms: int = 30000


class StateSettings(BaseSettings):
    """Where aggregate stages keep their local state. Environment: ``STREAMS_STATE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="STREAMS_STATE_", frozen=True, extra="ignore")

    # One folder per stage and slot below it; a cache of the changelog, safe to delete.
    dir: Path = Path(".streams-state")
    # Overrides the store an aggregate declares (memory, rocksdb or sqlite), e.g. for tests.
    store: Literal["memory", "rocksdb", "sqlite"] | None = None


class SchemaSettings(BaseSettings):
    """Where the .avsc files are. Environment: ``STREAMS_SCHEMAS_DIR``."""

    model_config = SettingsConfigDict(env_prefix="STREAMS_", frozen=True, extra="ignore")

    # Unset: ./schemas if the working directory has one, else the schemas of this checkout.
    schemas_dir: Path | None = None

    def resolved_schemas_dir(self) -> Path:
        if self.schemas_dir is not None:
            return self.schemas_dir
        local = Path.cwd() / "schemas"
        if local.is_dir():
            return local
        return Path(__file__).resolve().parents[1] / "schemas"


class LogSettings(BaseSettings):
    """How processes log. Environment: ``STREAMS_LOG_LEVEL`` (DEBUG, INFO, WARNING, ERROR)."""

    model_config = SettingsConfigDict(env_prefix="STREAMS_", frozen=True, extra="ignore")

    log_level: str = "INFO"


class JavaSettings(BaseSettings):
    """Which JDK runs the local stack.

    Environment: ``STREAMS_JAVA_HOME`` (the broker's), ``STREAMS_REGISTRY_JAVA_HOME`` (the
    registry's, Java 21+), ``JAVA_HOME``, and ``STREAMS_JVM_DIRS`` (folders of JDKs to search,
    separated by ``os.pathsep``; empty searches none).
    """

    model_config = SettingsConfigDict(env_prefix="STREAMS_", frozen=True, extra="ignore")

    java_home: str | None = None
    registry_java_home: str | None = None
    system_java_home: str | None = Field(default=None, validation_alias="JAVA_HOME")
    jvm_dirs: str | None = None

    def home(self, env_var: str) -> str | None:
        """The home named by ``env_var``: STREAMS_JAVA_HOME or STREAMS_REGISTRY_JAVA_HOME."""
        field = env_var.removeprefix("STREAMS_").lower()
        value = getattr(self, field, None)
        return value if isinstance(value, str) else None
