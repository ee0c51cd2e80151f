"""The public names of streams and streams.serde are importable as listed in __all__."""

from __future__ import annotations

import importlib

import pytest

import streams
import streams.serde
from streams.exceptions import StreamsError


@pytest.mark.parametrize("module_name", ["streams", "streams.serde"])
def test_every_name_in_all_is_importable(module_name: str) -> None:
    module = importlib.import_module(module_name)
    names = list(module.__all__)

    assert names
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(module, name), f"{module_name}.{name} is listed but missing"
    namespace: dict[str, object] = {}
    exec(f"from {module_name} import *", namespace)  # noqa: S102 - a fixed, trusted statement
    assert set(names) <= set(namespace)


def test_streams_exports_its_error_base_and_version() -> None:
    assert set(streams.__all__) == {"StreamsError", "__version__"}
    assert streams.StreamsError is StreamsError
    assert streams.__version__ == "0.1.0"


def test_streams_serde_exports_the_serdes() -> None:
    assert {"BytesSerde", "StringSerde", "JsonSerde", "AvroSerde", "Serde"} <= set(
        streams.serde.__all__
    )
    assert streams.serde.BytesSerde().serialize(b"x", topic="t") == b"x"
