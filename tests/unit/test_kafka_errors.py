"""from_kafka_exception: librdkafka's flags copied once onto our error tree; is_fenced."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from streams.exceptions import KafkaClientError, TransactionError
from streams.kafka.errors import FENCED_CODES, from_kafka_exception, is_fenced


def kafka_exception(
    code: int,
    reason: str = "reason",
    *,
    fatal: bool = False,
    retriable: bool = False,
    abortable: bool = False,
) -> KafkaException:
    return KafkaException(
        KafkaError(code, reason, fatal=fatal, retriable=retriable, txn_requires_abort=abortable)
    )


def test_a_retriable_error_is_retriable_and_not_fatal() -> None:
    error = kafka_exception(KafkaError._TIMED_OUT, "took too long", retriable=True)

    mapped = from_kafka_exception(error, operation="commit_transaction")

    assert type(mapped) is TransactionError
    assert (mapped.retriable, mapped.requires_abort, mapped.fatal) == (True, False, False)
    assert mapped.code == "_TIMED_OUT"
    assert mapped.message == "commit_transaction failed: _TIMED_OUT: took too long"


def test_an_abortable_error_requires_abort_and_is_not_fatal() -> None:
    error = kafka_exception(KafkaError._MSG_TIMED_OUT, "delivery failed", abortable=True)

    mapped = from_kafka_exception(error, operation="commit_transaction")

    assert (mapped.retriable, mapped.requires_abort, mapped.fatal) == (False, True, False)
    assert mapped.code == "_MSG_TIMED_OUT"


def test_a_fatal_error_is_fatal() -> None:
    error = kafka_exception(KafkaError._FATAL, "broken", fatal=True)

    mapped = from_kafka_exception(error, operation="produce")

    assert (mapped.retriable, mapped.requires_abort, mapped.fatal) == (False, False, True)
    assert mapped.code == "_FATAL"


def test_an_unflagged_error_is_treated_as_fatal() -> None:
    error = kafka_exception(KafkaError.INVALID_TXN_STATE, "bad state")

    mapped = from_kafka_exception(error, operation="abort_transaction")

    assert (mapped.retriable, mapped.requires_abort, mapped.fatal) == (False, False, True)
    assert mapped.code == "INVALID_TXN_STATE"


@pytest.mark.parametrize(
    "error",
    [RuntimeError("boom"), KafkaException("just a string"), KafkaException()],
    ids=["not-kafka", "kafka-without-error", "kafka-without-args"],
)
def test_an_exception_without_a_kafka_error_is_fatal(error: BaseException) -> None:
    mapped = from_kafka_exception(error, operation="flush")

    assert type(mapped) is TransactionError
    assert mapped.fatal is True
    assert mapped.retriable is False
    assert mapped.requires_abort is False
    assert mapped.code == ""
    assert mapped.message.startswith("flush failed: ")


def test_outside_a_transaction_abortable_is_dropped_and_the_error_is_not_transactional() -> None:
    error = kafka_exception(KafkaError._MSG_TIMED_OUT, "x", abortable=True)

    mapped = from_kafka_exception(error, operation="produce", transactional=False)

    assert type(mapped) is KafkaClientError
    assert mapped.requires_abort is False
    assert mapped.fatal is True


def test_retriable_outside_a_transaction_stays_retriable() -> None:
    error = kafka_exception(KafkaError._TRANSPORT, "x", retriable=True)

    mapped = from_kafka_exception(error, operation="produce", transactional=False)

    assert type(mapped) is KafkaClientError
    assert (mapped.retriable, mapped.fatal) == (True, False)


@pytest.mark.parametrize(
    "code",
    [KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH],
)
def test_fencing_codes_are_fenced_and_named_fenced(code: int) -> None:
    error = kafka_exception(code, "fenced by a newer producer", fatal=True)

    assert code in FENCED_CODES
    assert is_fenced(error) is True
    mapped = from_kafka_exception(error, operation="commit_transaction")
    assert mapped.code == "_FENCED"
    assert mapped.fatal is True


def test_a_generic_fatal_error_that_says_fenced_is_fenced() -> None:
    error = kafka_exception(KafkaError._FATAL, "Producer FENCED: newer epoch", fatal=True)

    assert is_fenced(error) is True
    assert from_kafka_exception(error, operation="produce").code == "_FENCED"


@pytest.mark.parametrize(
    "error",
    [
        kafka_exception(KafkaError._FATAL, "Local: Fatal error", fatal=True),
        kafka_exception(KafkaError._TIMED_OUT, "fenced", retriable=True),
        RuntimeError("fenced"),
    ],
    ids=["fatal-without-reason", "other-code-mentioning-fenced", "not-kafka"],
)
def test_other_errors_are_not_fenced(error: BaseException) -> None:
    assert is_fenced(error) is False
