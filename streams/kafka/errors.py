"""Map librdkafka's errors onto our error tree, once."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from streams.exceptions import KafkaClientError, TransactionError

__all__ = ["FENCED_CODES", "FENCED_NAMES", "from_kafka_exception", "is_fenced"]

# A newer producer with the same transactional.id exists, or the coordinator bumped the epoch
# after a transaction timeout: librdkafka normalises both to _FENCED (fatal).
FENCED_CODES = frozenset(
    {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}  # noqa: SLF001
)
# The same, as the ``code`` of a mapped KafkaClientError (the codes' names).
FENCED_NAMES = frozenset({"_FENCED", "PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH"})


def _kafka_error(error: BaseException) -> KafkaError | None:
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        return error.args[0]
    return None


def is_fenced(error: BaseException) -> bool:
    """True if the producer was fenced, including a fencing reported as a generic _FATAL."""
    kafka_error = _kafka_error(error)
    if kafka_error is None:
        return False
    if kafka_error.code() in FENCED_CODES:
        return True
    # produce() after a fatal fencing raises _FATAL "Unable to produce message: Local: Fatal
    # error"; librdkafka's fatal reason is only in the text of errors and the log
    return kafka_error.code() == KafkaError._FATAL and "fenced" in kafka_error.str().lower()  # noqa: SLF001


def from_kafka_exception(
    error: BaseException, *, operation: str, transactional: bool = True
) -> KafkaClientError:
    """Copy retriable / fatal / requires-abort from the client error; unflagged means fatal."""
    kafka_error = _kafka_error(error)
    kind = TransactionError if transactional else KafkaClientError
    if kafka_error is None:
        return kind(f"{operation} failed: {error}", fatal=True)
    retriable = bool(kafka_error.retriable())
    requires_abort = bool(kafka_error.txn_requires_abort()) if transactional else False
    fatal = bool(kafka_error.fatal()) or not (retriable or requires_abort)
    code = "_FENCED" if is_fenced(error) else str(kafka_error.name())
    return kind(
        f"{operation} failed: {kafka_error.name()}: {kafka_error.str()}",
        code=code,
        retriable=retriable,
        fatal=fatal,
        requires_abort=requires_abort,
    )
