"""The public names of streams and streams.serde are importable as listed in __all__."""

from __future__ import annotations

import importlib
import types

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


def test_streams_exports_exactly_what_a_pipeline_author_uses() -> None:
    """httpx-style: every public name of the package is in ``__all__``, and nothing else."""
    public = {
        name
        for name, value in vars(streams).items()
        if not name.startswith("_")
        and name != "annotations"  # from __future__
        # submodules appear as attributes once imported; only those listed are API
        and not (isinstance(value, types.ModuleType) and name not in streams.__all__)
    }

    assert public | {"__version__"} == set(streams.__all__)
    assert {
        "Pipeline",
        "Record",
        "Output",
        "RetryPolicy",
        "RetryLater",
        "DeadLetter",
        "Dependency",
        "SinkTransaction",
        "StageHarness",
        "StreamsError",
        "codecs",
        "avro",
        "raw",
        "text",
    } <= set(streams.__all__)
    assert streams.StreamsError is StreamsError
    assert streams.__version__ == "0.1.0"


def test_the_facade_does_not_shadow_the_standard_library() -> None:
    """``from streams import *`` must not bring a ``json`` that is not the standard module."""
    namespace: dict[str, object] = {}
    exec("from streams import *", namespace)  # noqa: S102 - a fixed, trusted statement
    assert "json" not in namespace
    assert callable(streams.codecs.json)


def test_every_public_error_sits_in_the_drawn_tree() -> None:
    """Each error class of ``streams.exceptions`` is named in the tree of its docstring."""
    import streams.exceptions as module  # noqa: PLC0415

    drawn = module.__doc__ or ""
    for name in module.__all__:
        value = getattr(module, name)
        assert issubclass(value, StreamsError), name
        assert f" {name} " in drawn or f" {name}\n" in drawn, f"{name} is not drawn in the tree"


def test_streams_serde_exports_the_serdes() -> None:
    assert {"BytesSerde", "StringSerde", "JsonSerde", "AvroSerde", "Serde"} <= set(
        streams.serde.__all__
    )
    assert streams.serde.BytesSerde().serialize(b"x", topic="t") == b"x"
