"""Entry point of one contender process: ``python -m bench.child SPEC.json``.

Exit codes: 0 done, 3 the contender is not available (its ``run`` raised NotImplementedError),
anything else a failure (the traceback is in the run's log file).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import sys
from pathlib import Path

from bench.contenders import CONTENDERS
from bench.spec import RunSpec

EXIT_NOT_AVAILABLE = 3

# Looked up through package metadata, not imported, so that a faust process does not pay
# confluent-kafka's memory just to say which version it does not use.
_PACKAGES = (
    "confluent-kafka",
    "fastavro",
    "pydantic",
    "pydantic-core",
    "quixstreams",
    "faust-streaming",
    "aiokafka",
)


def installed_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m bench.child SPEC.json", file=sys.stderr)
        return 2
    spec = RunSpec.from_json(Path(argv[1]).read_text())
    spec.add_report(pid=os.getpid(), executable=sys.executable, versions=installed_versions())
    module = importlib.import_module(CONTENDERS[spec.contender].module)
    try:
        module.run(spec)
    except NotImplementedError as exc:
        print(f"not available: {exc}", file=sys.stderr)
        spec.add_report(not_available=str(exc))
        return EXIT_NOT_AVAILABLE
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
