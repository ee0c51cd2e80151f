"""Fetch the broker jars and the registry distribution from Maven Central, once.

A folder counts as fetched when its ``.complete`` file exists, so an interrupted download is
redone rather than half-used, and a second ``up`` downloads nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

from streams.exceptions import LocalStackError, PrerequisiteError

__all__ = ["fetch_with_maven", "is_complete", "unpack_tarball"]

# 3.8.1 is the maven-dependency-plugin version whose flags are documented in ops/; pinning it means
# Maven does not resolve "latest" metadata on every fetch.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
_NETWORK_SIGNS = (
    "Unknown host",
    "Could not transfer",
    "Connection refused",
    "Network is unreachable",
    "Connect timed out",
    "Name or service not known",
    "transfer failed",
)
COMPLETE = ".complete"


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE).exists()


def fetch_with_maven(
    *, mvn: str, pom: Path, output: Path, properties: dict[str, str], extra: list[str]
) -> None:
    """Run ``copy-dependencies`` on pom into output; a clear error if mvn or the network fails."""
    if is_complete(output):
        return
    mvn_path = shutil.which(mvn)
    if mvn_path is None:
        raise PrerequisiteError(
            f"mvn not found: the local stack fetches its jars from Maven Central with Maven "
            f"(`{mvn}` is not on PATH)",
            hint="install Maven (Debian: apt-get install maven) or set STREAMS_MAVEN_COMMAND",
        )
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    argv = [
        mvn_path,
        "-B",
        "-q",
        "-f",
        str(pom),
        f"{DEPENDENCY_PLUGIN}:copy-dependencies",
        f"-DoutputDirectory={output}",
        *[f"-D{key}={value}" for key, value in properties.items()],
        *extra,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        text = done.stdout + done.stderr
        first_error = next(
            (line for line in text.splitlines() if "[ERROR]" in line), text.strip()[-400:]
        )
        if any(sign in text for sign in _NETWORK_SIGNS):
            raise PrerequisiteError(
                f"Maven could not download from its repository: {first_error.strip()}",
                hint="check the network and proxy (~/.m2/settings.xml); "
                "Maven Central must be reachable for the first `up`",
            )
        raise LocalStackError(
            f"mvn failed on {pom}: {first_error.strip()}",
            hint=f"run it by hand to see the whole output: {' '.join(argv)}",
        )
    (output / COMPLETE).write_text("ok\n")


def unpack_tarball(tarball_dir: Path, target: Path) -> None:
    """Extract the single .tar.gz in tarball_dir into target, once."""
    if is_complete(target):
        return
    archives = sorted(tarball_dir.glob("*.tar.gz"))
    if len(archives) != 1:
        raise LocalStackError(f"expected one .tar.gz in {tarball_dir}, found {len(archives)}")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    with tarfile.open(archives[0]) as tar:
        tar.extractall(target, filter="data")
    (target / COMPLETE).write_text("ok\n")
