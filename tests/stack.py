"""Run a command with one broker and registry for it: ``python -m tests.stack -- pytest ...``.

``make test`` runs the suite in parallel processes (pytest-xdist), which must share one cluster
rather than start one each. This starts it once, before them: the developer's local stack when
one runs and answers, else a private stack in a temporary folder (free ports, the jars of
``$STREAMS_HOME/lib``), which is stopped and deleted afterwards. The command sees the cluster
through ``STREAMS_TEST_BOOTSTRAP_SERVERS``, ``STREAMS_TEST_SCHEMA_REGISTRY_URL`` and, for the
tests of ``streams local`` itself, ``STREAMS_TEST_STACK_ENV`` (tests/cluster.py reads them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from streams.localstack.stack import LocalStack


def _say(message: str) -> None:
    sys.stderr.write(f"[test stack] {message}\n")


def main(argv: list[str]) -> int:
    if "--" in argv:
        argv = argv[argv.index("--") + 1 :]
    if not argv:
        _say("usage: python -m tests.stack -- COMMAND [ARGS...]")
        return 2
    developer = LocalStack()
    status = developer.status()
    home: Path | None = None
    if status.running:
        stack = developer
        local_env: dict[str, str] = {}
        _say(f"using the running local stack at {status.bootstrap_servers}")
    else:
        home = Path(tempfile.mkdtemp(prefix="streams-test-stack-"))
        stack = LocalStack.private(home)
        stack.up(progress=_say)
        status = stack.status()
        settings = stack.settings
        local_env = {
            "STREAMS_HOME": str(settings.home),
            "STREAMS_KAFKA_PORT": str(settings.kafka_port),
            "STREAMS_CONTROLLER_PORT": str(settings.controller_port),
            "STREAMS_REGISTRY_PORT": str(settings.registry_port),
        }
    env = {
        **os.environ,
        "STREAMS_TEST_BOOTSTRAP_SERVERS": status.bootstrap_servers,
        "STREAMS_TEST_SCHEMA_REGISTRY_URL": status.schema_registry_url,
        "STREAMS_TEST_STACK_ENV": json.dumps(local_env),
    }
    try:
        return subprocess.run(argv, env=env, check=False).returncode
    finally:
        if home is not None:
            stack.down()
            if os.environ.get("STREAMS_TEST_KEEP_STACK") == "1":
                _say(f"kept {home}")
            else:
                shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
