"""The public names of streams.serde: exactly these, all importable, all documented."""

from __future__ import annotations

import inspect

import streams.serde

EXPECTED = {
    "AvroSchema",
    "AvroSerde",
    "BytesSerde",
    "JsonSerde",
    "SchemaCheckReport",
    "Serde",
    "StringSerde",
    "check_against_registry",
    "check_backward_compatible",
    "check_binding",
    "check_schema_dir",
    "discover_schemas",
    "load_schema",
    "parse_schema",
    "registry_client",
}


def test_all_lists_exactly_the_public_names() -> None:
    assert set(streams.serde.__all__) == EXPECTED
    assert list(streams.serde.__all__) == sorted(streams.serde.__all__)


def test_every_public_name_is_importable_and_has_a_docstring() -> None:
    for name in streams.serde.__all__:
        obj = getattr(streams.serde, name)
        assert inspect.getdoc(obj), name


def test_the_contract_signatures() -> None:
    assert list(inspect.signature(streams.serde.AvroSerde).parameters) == [
        "model",
        "schema",
        "registry",
        "auto_register",
    ]
    auto_register = inspect.signature(streams.serde.AvroSerde).parameters["auto_register"]
    assert auto_register.kind is inspect.Parameter.KEYWORD_ONLY
    assert auto_register.default is True
    check = inspect.signature(streams.serde.check_against_registry).parameters
    assert check["register"].kind is inspect.Parameter.KEYWORD_ONLY
    for serde in (streams.serde.BytesSerde, streams.serde.StringSerde, streams.serde.JsonSerde):
        for method in ("serialize", "deserialize"):
            parameters = inspect.signature(getattr(serde, method)).parameters
            assert parameters["topic"].kind is inspect.Parameter.KEYWORD_ONLY
