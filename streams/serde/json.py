"""JSON values bound to a pydantic model (``model_dump_json`` / ``model_validate_json``)."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from streams.exceptions import SerializationError

__all__ = ["JsonSerde", "validation_summary"]

M = TypeVar("M", bound=BaseModel)


class JsonSerde(Generic[M]):
    """Serialize ``model`` instances as UTF-8 JSON, and back.

    Every failure raises SerializationError with the raw bytes and the pydantic message (which
    field, what was wrong): route the record to the DLQ, or fix the producer.
    """

    def __init__(self, model: type[M]) -> None:
        self.model = model

    def serialize(self, value: M, *, topic: str) -> bytes:
        if not isinstance(value, self.model):
            raise SerializationError(
                f"expected a {self.model.__name__} for topic {topic}, got {type(value).__name__}",
                topic=topic,
            )
        try:
            return value.model_dump_json(by_alias=True).encode()
        except ValueError as error:  # pydantic_core.PydanticSerializationError is a ValueError
            raise SerializationError(
                f"cannot encode {self.model.__name__} as JSON: {error}", topic=topic
            ) from error

    def deserialize(self, data: bytes | None, *, topic: str) -> M:
        if data is None:
            raise SerializationError(
                f"record value on topic {topic} is null (a tombstone?), expected JSON",
                topic=topic,
            )
        try:
            return self.model.model_validate_json(data)
        except ValidationError as error:
            raise SerializationError(
                f"record value is not a valid {self.model.__name__} in JSON:"
                f" {validation_summary(error)}",
                raw=data,
                topic=topic,
            ) from error


def validation_summary(error: ValidationError) -> str:
    """Pydantic's errors on one line: ``lines.0.sku: Field required; total: ...``."""
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or '<value>'}: {item['msg']}"
        for item in error.errors(include_url=False)
    )
