"""Every error this package raises, in one tree.

::

    StreamsError              base of everything raised on purpose here
    ├── ConfigError           a setting is missing or invalid: fix the environment or file
    ├── BadArgumentError      an argument of a command is malformed (a time, an offset range)
    ├── LocalStackError       the local Kafka + schema registry stack cannot start or stop
    │   ├── PrerequisiteError java 17+/21+ or mvn missing, repository unreachable
    │   ├── PortInUseError    a port the stack needs is taken by another process
    │   └── StalePidFileError a pid file names a process that is gone or is not ours
    ├── TopologyError         a pipeline declaration is inconsistent (names, topics, types)
    │   └── OutputTopicError  a handler wrote to a topic its stage does not declare
    ├── TopicMismatchError    an existing topic differs from the declared spec
    ├── UnknownTopicError     a command named a topic the cluster does not have
    ├── SchemaError           a model and its Avro schema disagree, or a change is incompatible
    ├── SerializationError    a record cannot be (de)serialized; carries the raw bytes
    │   └── RegistryUnavailableError  the schema registry did not answer (transient: retried)
    ├── KafkaClientError      librdkafka reported an error; retriable/fatal/abortable copied
    │   └── TransactionError  a transactional call failed; see ``requires_abort``, ``fatal``
    ├── StageStoppedError     a stage stopped itself: continuing would lose a record
    ├── RefusedError          a safety rule refused the operation; nothing was changed (exit 3)
    ├── TaskFailedError       a replay task stopped on an error it cannot get past
    ├── FencedError           another live worker runs this worker's slot (transactional.id)
    ├── OutputRejectedError   an output is larger than the broker accepts, or was refused
    └── HandlerSignal         raised by handlers on purpose (not errors of this package)
        ├── RetryLater        "try this record again later" -> the stage's delayed retry topics
        │   └── DependencyUnavailable  a dependency timed out, refused, or its breaker is open
        └── DeadLetter        "this record can never succeed" -> the stage's dead-letter topic
            └── LateRecord    an aggregate's record whose every window has closed (reason late)

Every error carries a ``hint``: one sentence saying what the operator should do next.
The command line prints ``error: <message>`` and, on the next line, ``hint: <hint>``.
"""

from __future__ import annotations

__all__ = [
    "BadArgumentError",
    "ConfigError",
    "DeadLetter",
    "DependencyUnavailable",
    "FencedError",
    "HandlerSignal",
    "KafkaClientError",
    "LateRecord",
    "LocalStackError",
    "OutputRejectedError",
    "OutputTopicError",
    "PortInUseError",
    "PrerequisiteError",
    "RefusedError",
    "RegistryUnavailableError",
    "RetryLater",
    "SchemaError",
    "SerializationError",
    "StageStoppedError",
    "StalePidFileError",
    "StreamsError",
    "TaskFailedError",
    "TopicMismatchError",
    "TopologyError",
    "TransactionError",
    "UnknownTopicError",
]


class StreamsError(Exception):
    """Base of every error raised on purpose by this package."""

    default_hint = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return self.message


class ConfigError(StreamsError):
    """A setting is missing or invalid."""

    default_hint = "check the STREAMS_* environment variables and the settings file"


class BadArgumentError(StreamsError):
    """An argument of a command is malformed: a time, a duration, an offset range, a file."""

    default_hint = "see the command's --help for the accepted forms"


class LocalStackError(StreamsError):
    """The local Kafka + schema registry stack could not be brought up or down."""

    default_hint = "run `streams local logs` to see what the broker and registry printed"


class PrerequisiteError(LocalStackError):
    """A tool the local stack needs (java 17+, mvn, Maven Central) is missing or unreachable."""


class PortInUseError(LocalStackError):
    """A port the local stack needs is already bound by a process that is not ours."""


class StalePidFileError(LocalStackError):
    """A pid file names a process that is no longer running, or is not ours."""

    default_hint = (
        "its last lines are in `streams local logs kafka|registry`; "
        "`streams local up --clear-stale` removes the file and starts afresh"
    )


class TopologyError(StreamsError):
    """A pipeline declaration is inconsistent."""


class OutputTopicError(TopologyError):
    """A handler returned an output for a topic its stage does not declare (or named none).

    A mistake in the stage's code, not in the record: the worker stops (exit code 5) rather
    than dead-letter every record.
    """


class TopicMismatchError(StreamsError):
    """An existing topic differs from its declared spec (partition count or config)."""

    default_hint = (
        "alter the topic by hand (kafka-topics --alter / kafka-configs) or change the declaration"
    )


class UnknownTopicError(StreamsError):
    """A command named a topic that the cluster does not have."""

    default_hint = "`streams topics list` shows the topics there are"


class SchemaError(StreamsError):
    """A pydantic model and its Avro schema disagree, or a schema change breaks compatibility."""


class SerializationError(StreamsError):
    """A record could not be serialized or deserialized.

    ``raw`` holds the bytes that failed, so that nothing is lost when the record is routed aside.
    """

    def __init__(
        self,
        message: str,
        *,
        raw: bytes | None = None,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.raw = raw
        self.topic = topic
        self.partition = partition
        self.offset = offset


class RegistryUnavailableError(SerializationError):
    """The schema registry did not answer (refused, timed out, or a 5xx).

    Transient, never the record's fault: at start-up the worker waits for the registry and
    says so; at run time the record goes to the stage's retry topics (not the DLQ), while
    records whose schemas are cached go on being processed.
    """

    default_hint = (
        "check that the schema registry at STREAMS_SCHEMA_REGISTRY_URL runs and answers; "
        "nothing is lost meanwhile"
    )


class KafkaClientError(StreamsError):
    """librdkafka reported an error.

    The three flags are copied once from the client's ``KafkaError`` so that callers never
    have to reach into confluent_kafka to decide what to do.
    """

    default_hint = "check that the broker is up (`streams local status`) and reachable"

    def __init__(
        self,
        message: str,
        *,
        code: str = "",
        retriable: bool = False,
        fatal: bool = False,
        requires_abort: bool = False,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.retriable = retriable
        self.fatal = fatal
        self.requires_abort = requires_abort

    def replace(
        self, *, message: str | None = None, code: str | None = None, fatal: bool | None = None
    ) -> KafkaClientError:
        """A copy of this error with some fields changed (errors are never changed in place)."""
        return type(self)(
            self.message if message is None else message,
            code=self.code if code is None else code,
            retriable=self.retriable,
            fatal=self.fatal if fatal is None else fatal,
            requires_abort=self.requires_abort,
            hint=self.hint,
        )


class TransactionError(KafkaClientError):
    """A transactional call failed.

    ``requires_abort``: abort and rewind to the committed offsets. ``fatal`` (fencing included):
    the producer must be recreated; the stage does this itself. Neither: treated as fatal.
    """


class StageStoppedError(StreamsError):
    """A stage stopped itself because going on would have skipped or lost a record."""


class RefusedError(StreamsError):
    """A safety rule refused the operation (a replay over a live group, say); nothing changed.

    The command line exits with code 3 for it, like any check that found a problem, so that a
    script can tell "refused on purpose" (3) from "failed" (1).
    """


class TaskFailedError(StreamsError):
    """A replay task (redrive, copy) stopped on an error it cannot get past.

    What it committed stays committed; nothing is written twice. ``fenced``: another process
    took over the task's transactional.id, and carries on with it.
    """

    def __init__(self, message: str, *, hint: str | None = None, fenced: bool = False) -> None:
        super().__init__(message, hint=hint)
        self.fenced = fenced


class FencedError(StreamsError):
    """Another live worker uses this worker's transactional.id: this one must stop."""

    default_hint = (
        "two workers run with the same --slot; run each slot once (the supervisor does this)"
    )


class OutputRejectedError(StreamsError):
    """An output of the record is larger than the broker accepts (or the broker refused it).

    Never raised out of a stage: the input record goes to the DLQ with reason
    ``output-rejected``, and this error's message says which output and why.
    """


class HandlerSignal(StreamsError):  # noqa: N818 - a signal raised on purpose, not an error
    """Raised by a handler on purpose to route the record it is handling."""


class RetryLater(HandlerSignal):
    """Retry this record later, through the stage's delayed retry topics.

    ``delay_s`` asks for at least that delay (the next retry tier at or above it is used);
    None uses the next tier of the stage's retry policy.
    """

    def __init__(
        self, message: str = "retry later", *, delay_s: float | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.delay_s = delay_s


class DependencyUnavailable(RetryLater):
    """A dependency timed out, refused the call, or its circuit breaker is open."""

    def __init__(
        self,
        dependency: str,
        message: str,
        *,
        delay_s: float | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(f"{dependency}: {message}", delay_s=delay_s, hint=hint)
        self.dependency = dependency


class DeadLetter(HandlerSignal):
    """This record can never succeed: send it to the stage's dead-letter topic with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LateRecord(DeadLetter):
    """An aggregate's record arrived after every window it belongs to had closed.

    It goes to the stage's DLQ with reason ``late`` (or is counted and dropped with
    ``late="drop"``). Raise the window's grace if such records are expected.
    """
