"""YAML text of generated resources, and writing a generated tree to a folder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["to_yaml", "write_tree"]


class _Dumper(yaml.SafeDumper):
    """Block style, lists indented under their key (as kubectl and compose files are written)."""

    # PyYAML's signature; `indentless` is ignored on purpose: lists are always indented
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:  # noqa: ARG002
        super().increase_indent(flow, indentless=False)


def to_yaml(documents: list[Any], *, header: str = "") -> str:
    """``documents`` as one YAML stream (``---`` between them), keys in the order given."""
    body = yaml.dump_all(
        documents, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000
    )
    return header + body


def write_tree(out: Path, files: Mapping[str, str]) -> list[Path]:
    """Write ``files`` (relative path -> text) under ``out``; returns the paths written."""
    written = []
    for relative, text in files.items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
