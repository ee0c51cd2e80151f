"""Typed, frozen settings, read from the environment and the settings files here and nowhere else.

Every setting has an environment variable named ``STREAMS_<FIELD>`` (upper case). Raw
librdkafka settings, for anything not modelled here, go through ``STREAMS_KAFKA_EXTRA`` as JSON
(for example ``{"security.protocol": "SSL"}``).

The connection settings (``KafkaSettings``) can also come from files. Highest first:

1. a value given as an argument (the command line's ``--bootstrap-servers``);
2. the environment (``STREAMS_BOOTSTRAP_SERVERS``, ...);
3. the selected profile (``--profile NAME`` or ``STREAMS_PROFILE``): the table
   ``[profiles.NAME]`` of the project file, else ``[NAME]`` of the user's profiles file
   (``$XDG_CONFIG_HOME/streams/profiles.toml``, default ``~/.config/streams/profiles.toml``);
4. the top-level keys of the project file: ``streams.toml`` in the working directory or the
   nearest folder above it (``STREAMS_CONFIG`` names another file);
5. the defaults: the local stack (``streams local up``).

A key a file does not know (a typo) is an error that names it, never silently ignored.
"""

from __future__ import annotations

import difflib
import logging
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from streams.exceptions import ConfigError

__all__ = [
    "CLIENT_LOGGER",
    "PROJECT_FILE",
    "ConfigFileSettings",
    "JavaSettings",
    "KafkaSettings",
    "LocalStackSettings",
    "LogSettings",
    "SchemaSettings",
    "SinkSettings",
    "StageSettings",
    "StateSettings",
    "TerminalSettings",
    "default_home",
    "export_connection",
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


PROJECT_FILE = "streams.toml"


class ConfigFileSettings(BaseSettings):
    """Where the settings files are. Environment: ``STREAMS_CONFIG``, ``XDG_CONFIG_HOME``."""

    model_config = SettingsConfigDict(env_prefix="STREAMS_", frozen=True, extra="ignore")

    # the project file; unset: streams.toml in the working directory or the nearest parent
    config: Path | None = None
    xdg_config_home: Path | None = Field(default=None, validation_alias="XDG_CONFIG_HOME")

    def project_file(self) -> Path | None:
        if self.config is not None:
            if not self.config.is_file():
                raise ConfigError(
                    f"STREAMS_CONFIG names {self.config}, which is not a file",
                    hint="point STREAMS_CONFIG at a streams.toml, or unset it",
                )
            return self.config
        here = Path.cwd()
        for folder in (here, *here.parents):
            candidate = folder / PROJECT_FILE
            if candidate.is_file():
                return candidate
        return None

    def profiles_file(self) -> Path:
        return (self.xdg_config_home or Path.home() / ".config") / "streams" / "profiles.toml"


@dataclass(frozen=True)
class _FileValues:
    """Connection settings read from the files, and where each came from."""

    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(
            f"{path} is not valid TOML: {error}", hint="fix the file, or move it away"
        ) from error
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from error


def _checked(table: Any, where: str) -> dict[str, Any]:
    """The table's keys, each one a connection setting (a typo is an error naming it)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where} is not a table of settings")
    known = [name for name in KafkaSettings.model_fields if name != "profile"]
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            raise ConfigError(
                f"{where}: unknown setting {key!r}"
                + (f" (did you mean {close[0]!r}?)" if close else ""),
                hint=f"the settings a file can hold: {', '.join(known)}",
            )
    return dict(table)


def _file_values(profile: str | None) -> _FileValues:
    """The project file's top-level keys, overlaid with the selected profile's."""
    files = ConfigFileSettings()
    project = files.project_file()
    data = _read_toml(project) if project is not None else {}
    found = _FileValues()
    top = {key: value for key, value in data.items() if key != "profiles"}
    for key, value in _checked(top, str(project)).items():
        found.values[key] = value
        found.origins[key] = f"{key} in {project}"
    if not profile:
        return found
    table, where = _profile_table(profile, project, data, files.profiles_file())
    for key, value in _checked(table, f"profile {profile!r} in {where}").items():
        found.values[key] = value
        found.origins[key] = f"{key} of profile {profile!r} in {where}"
    return found


def _profile_table(
    name: str, project: Path | None, project_data: dict[str, Any], user_file: Path
) -> tuple[Any, Path]:
    """The table of profile ``name``: the project file's first, else the user's file."""
    project_profiles = project_data.get("profiles", {})
    if project is not None and isinstance(project_profiles, dict) and name in project_profiles:
        return project_profiles[name], project
    user_profiles = _read_toml(user_file) if user_file.is_file() else {}
    if name in user_profiles:
        return user_profiles[name], user_file
    known = sorted(
        {*(project_profiles if isinstance(project_profiles, dict) else {}), *user_profiles}
    )
    places = f"{user_file} ([{name}])"
    if project is not None:
        places = f"{project} ([profiles.{name}]) or {places}"
    raise ConfigError(
        f"no profile {name!r} in {places}",
        hint=f"profiles found: {', '.join(known)}"
        if known
        else f'write one there, e.g. [{name}] with bootstrap_servers = "host:9092"',
    )


class _FileSource(PydanticBaseSettingsSource):
    """pydantic-settings source of the connection files, below the environment."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        init: InitSettingsSource,
        env: EnvSettingsSource,
    ) -> None:
        super().__init__(settings_cls)
        self._init = init
        self._env = env

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        del field  # unused: __call__ returns every value at once
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        profile = self._init.init_kwargs.get("profile") or self._env().get("profile")
        return _file_values(profile).values


# the settings whose default follows the local stack (`streams local up`)
_LOCAL_DEFAULTS = ("bootstrap_servers", "schema_registry_url")


class KafkaSettings(BaseSettings):
    """How clients reach Kafka and the schema registry.

    Environment: ``STREAMS_BOOTSTRAP_SERVERS``, ``STREAMS_SCHEMA_REGISTRY_URL``,
    ``STREAMS_SASL_USERNAME`` / ``STREAMS_SASL_PASSWORD``, ``STREAMS_KAFKA_EXTRA`` (JSON),
    ``STREAMS_PROFILE``; below the environment, the settings files (see the module docstring).
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
    # the named profile of the settings files (--profile, STREAMS_PROFILE)
    profile: str | None = None

    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        origins = _file_values(self.profile).origins
        for name in type(self).model_fields:
            variable = f"STREAMS_{name.upper()}"
            if any(key.upper() == variable for key in os.environ):
                origins[name] = variable
            if name in values:
                origins[name] = f"--{name.replace('_', '-')}"
        self._origins = origins

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        del dotenv_settings, file_secret_settings  # no .env files, no secrets folder
        assert isinstance(init_settings, InitSettingsSource)  # noqa: S101 - pydantic-settings'
        assert isinstance(env_settings, EnvSettingsSource)  # noqa: S101 - own source types
        return (init_settings, env_settings, _FileSource(settings_cls, init_settings, env_settings))

    def origin(self, name: str) -> str | None:
        """Where setting ``name`` came from (``STREAMS_...``, a file, a flag); None: default."""
        return self._origins.get(name)

    def shown(self) -> dict[str, tuple[Any, str]]:
        """Each setting's value (secrets masked) and where it came from, for `streams config`."""
        found: dict[str, tuple[Any, str]] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "********"
            default = "default: the local stack" if name in _LOCAL_DEFAULTS else "default"
            found[name] = (value, self.origin(name) or default)
        return found

    @property
    def bootstrap_source(self) -> str:
        """Where ``bootstrap_servers`` came from, for the first log line of every worker.

        Unset, the servers are the local stack's (``streams local up``); a worker meant for a
        real cluster that logs this has not been given STREAMS_BOOTSTRAP_SERVERS.
        """
        return self.origin("bootstrap_servers") or (
            "default: the local stack's port (STREAMS_BOOTSTRAP_SERVERS is not set; "
            "set it to reach another cluster)"
        )

    @property
    def reach_hint(self) -> str:
        """What to check when the brokers do not answer: the hint of every 'cannot reach'."""
        origin = self.origin("bootstrap_servers")
        if origin is None:
            return (
                "start the local stack (`streams local up`), or name your cluster: "
                "--bootstrap-servers, STREAMS_BOOTSTRAP_SERVERS or a profile (--profile)"
            )
        return (
            f"check that the broker runs and that {origin} is right "
            "(`streams local status` for the local stack)"
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


def export_connection(kafka: KafkaSettings) -> None:
    """Hand the command line's connection flags to the worker processes it starts.

    Workers read their settings themselves (a supervisor passes them its environment), so
    ``streams run --profile prod --bootstrap-servers X`` must reach them as ``STREAMS_PROFILE``
    and ``STREAMS_BOOTSTRAP_SERVERS``: the flags' rank, above the environment, holds because
    they replace the variables. Values that did not come from a flag are left alone.
    """
    for name in ("profile", "bootstrap_servers"):
        if kafka.origin(name) == f"--{name.replace('_', '-')}":
            os.environ[f"STREAMS_{name.upper()}"] = str(getattr(kafka, name))


class TerminalSettings(BaseSettings):
    """How the command line prints. Environment: ``NO_COLOR`` (https://no-color.org)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    # present and not empty: no colour, whatever the terminal
    no_color: str | None = Field(default=None, validation_alias="NO_COLOR")

    @property
    def colour_allowed(self) -> bool:
        return not self.no_color


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
    # librdkafka's queues: after the imports (about 40 MiB), the largest part of a worker's
    # memory. Measured on the benchmark's raw load (300,000 100-byte records on 4 partitions,
    # `python -m bench.run --records 300000 --rounds 3 --contenders b2,ours --workload raw
    # --fetch-queue-backoff-ms 10 --retry-backoff-ms 10`; bench/README.md, "Memory").
    # queued.min.messages, records per partition the fetcher keeps queued. librdkafka's 100,000
    # (x 4 partitions, a few hundred bytes of bookkeeping each on top of the record) was what
    # made the peak: 116 MiB at 100,000, 73 at 10,000, 71 at 2,000, with no throughput lost.
    # 10,000 rather than less: past it a partition waits fetch.queue.backoff.ms (100 ms) before
    # its next fetch, so 10,000 lets one partition feed 100k records/s, about a stage's best.
    consumer_queue_min_messages: int = 10000
    # queued.max.messages.kbytes, the prefetched bytes of all the input partitions together:
    # the bound for large records, where 10,000 per partition would be gigabytes. 16 MiB, not
    # librdkafka's 64: alone it lowered nothing at 100-byte records (bench/results/
    # 20261127T132447Z-queued-max-16MiB.json), but it caps 1 KiB+ records at 16 MiB.
    consumer_queue_max_kbytes: int = 16384
    # fetch.max.bytes, one fetch response from one broker (librdkafka's 50 MiB), and
    # max.partition.fetch.bytes, one partition's share (1 MiB). A fetched buffer lives until
    # its last record is freed; 4 MiB / 256 KiB took the peak from 73 to 61 MiB with the two
    # settings above, at the same throughput. Neither is a hard limit: a record batch larger
    # than either is still fetched whole, so they never stop a stage on a large record.
    fetch_max_bytes: int = 4194304
    partition_fetch_max_bytes: int = 262144
    # queue.buffering.max.kbytes, records produced but not yet delivered: librdkafka's 1 GiB.
    # A stage's producer holds at most one transaction's records (commit flushes them): 16 MiB
    # changed nothing measurable (112 against 116 MiB, one round), and a lower bound would
    # only add BufferError waits for batches of large records. Kept, and stated here.
    producer_queue_max_kbytes: int = 1048576
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
    # The common record (one input record, one value for the stage's one output topic) is
    # handled in one inlined loop (streams/stage/fastpath.py; 0.82 of the general path's CPU
    # per record, 1.19 of its throughput: `python -m bench.fast_path`, bench/README.md).
    # False: every record takes the general path. The
    # results are the same either way (tests/integration/test_fast_path.py compares them).
    fast_path: bool = True


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

    # Unset: ./schemas if the working directory has one, else the schemas of this checkout (or,
    # installed from a wheel, the copy packed into it as streams/_schemas).
    schemas_dir: Path | None = None

    def resolved_schemas_dir(self) -> Path:
        if self.schemas_dir is not None:
            return self.schemas_dir
        local = Path.cwd() / "schemas"
        if local.is_dir():
            return local
        here = Path(__file__).resolve().parent
        packed = here / "_schemas"
        return packed if packed.is_dir() else here.parent / "schemas"


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
