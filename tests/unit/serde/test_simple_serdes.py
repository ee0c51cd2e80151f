"""BytesSerde, StringSerde and JsonSerde: round trips and every failure as SerializationError."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from pydantic import BaseModel, Field

from streams.exceptions import SerializationError
from streams.serde import BytesSerde, JsonSerde, Serde, StringSerde

from .models import OrderPlaced, order

TOPIC = "t"


class Greeting(BaseModel):
    text: str
    count: int = Field(ge=0)
    sender: str | None = Field(default=None, alias="from")


def test_bytes_are_passed_through() -> None:
    serde: Serde[bytes] = BytesSerde()

    assert serde.serialize(b"\x00\xff", topic=TOPIC) == b"\x00\xff"
    assert serde.deserialize(b"\x00\xff", topic=TOPIC) == b"\x00\xff"
    assert BytesSerde().serialize(bytearray(b"ab"), topic=TOPIC) == b"ab"


def test_text_round_trips_as_utf8() -> None:
    serde: Serde[str] = StringSerde()

    assert serde.serialize("blåbær ☃", topic=TOPIC) == "blåbær ☃".encode()
    assert serde.deserialize("blåbær ☃".encode(), topic=TOPIC) == "blåbær ☃"


def test_json_round_trips_a_model_using_its_aliases() -> None:
    serde: Serde[Greeting] = JsonSerde(Greeting)
    value = Greeting(text="hi", count=2, **{"from": "ada"})

    data = serde.serialize(value, topic=TOPIC)

    assert json.loads(data) == {"text": "hi", "count": 2, "from": "ada"}
    assert serde.deserialize(data, topic=TOPIC) == value


def test_json_round_trips_the_full_order() -> None:
    serde = JsonSerde(OrderPlaced)
    value = order(signature=b"utf-8 only")

    assert serde.deserialize(serde.serialize(value, topic=TOPIC), topic=TOPIC) == value


def test_a_value_pydantic_cannot_write_as_json_is_a_serialization_error() -> None:
    value = order(signature=b"\x00\xff")  # pydantic writes bytes as UTF-8 text by default

    with pytest.raises(SerializationError, match="cannot encode OrderPlaced as JSON") as raised:
        JsonSerde(OrderPlaced).serialize(value, topic=TOPIC)
    assert raised.value.topic == TOPIC


@pytest.mark.parametrize(
    "serde", [BytesSerde(), StringSerde(), JsonSerde(Greeting)], ids=["bytes", "string", "json"]
)
def test_a_null_value_is_a_serialization_error(serde: Any) -> None:
    with pytest.raises(SerializationError, match="is null") as raised:
        serde.deserialize(None, topic=TOPIC)
    assert raised.value.topic == TOPIC


@pytest.mark.parametrize(
    ("serde", "value"),
    [(BytesSerde(), "text"), (StringSerde(), b"bytes"), (JsonSerde(Greeting), {"text": "x"})],
    ids=["bytes", "string", "json"],
)
def test_serializing_the_wrong_type_is_a_serialization_error(serde: Any, value: Any) -> None:
    with pytest.raises(SerializationError, match="expected") as raised:
        serde.serialize(value, topic=TOPIC)
    assert raised.value.topic == TOPIC


def test_invalid_utf8_is_a_serialization_error_with_the_raw_bytes() -> None:
    with pytest.raises(SerializationError, match="not valid UTF-8") as raised:
        StringSerde().deserialize(b"\xff\xfe", topic=TOPIC)
    assert raised.value.raw == b"\xff\xfe"


def test_text_that_cannot_be_utf8_is_a_serialization_error() -> None:
    with pytest.raises(SerializationError, match="cannot encode text as UTF-8"):
        StringSerde().serialize("\ud800", topic=TOPIC)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"{not json", "Invalid JSON"),
        (b'{"text": "hi"}', "count: Field required"),
        (b'{"text": "hi", "count": -1}', "count: Input should be greater than or equal to 0"),
        (b"[]", "Input should be an object"),
        (b"\xff", "Invalid JSON"),
    ],
    ids=["syntax", "missing-field", "constraint", "not-an-object", "not-utf8"],
)
def test_invalid_json_is_a_serialization_error_naming_the_field(data: bytes, expected: str) -> None:
    with pytest.raises(SerializationError, match=expected) as raised:
        JsonSerde(Greeting).deserialize(data, topic=TOPIC)
    assert raised.value.raw == data
    assert "\n" not in raised.value.message


def test_a_json_serde_is_a_serde_of_its_model() -> None:
    serde = cast("Serde[Greeting]", JsonSerde(Greeting))

    assert isinstance(serde.deserialize(b'{"text": "a", "count": 1}', topic=TOPIC), Greeting)
