"""Fetch the broker jars and the registry distribution from Maven Central, once.

A folder counts as fetched when its ``.complete`` file exists, so an interrupted download is
redone rather than half-used, and a second ``up`` downloads nothing. While Maven downloads,
a progress line (files and megabytes so far) is reported every ``PROGRESS_EVERY_S``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Self

from streams.exceptions import LocalStackError, PrerequisiteError

__all__ = ["PROGRESS_EVERY_S", "fetch_with_maven", "is_complete", "unpack_tarball"]

# A first download is about 235 MB (broker 75, registry 160) and takes minutes on a slow line:
# a line every 5 s shows it moves without flooding the terminal.
PROGRESS_EVERY_S = 5.0
# Maven's (batch mode) line for each file it fetched: "Downloaded from central: URL (1.2 MB at ...)"
_DOWNLOADED = re.compile(r"Downloaded from [^:]+: \S+ \(([\d.]+) (B|kB|MB|GB) at ")
_DOWNLOADING = re.compile(r"Downloading from [^:]+: \S*/([^/\s]+)\s*$")
_UNITS = {"B": 1, "kB": 1_000, "MB": 1_000_000, "GB": 1_000_000_000}
# Maven's last lines are kept for the error message of a failed fetch.
_KEPT_LINES = 400

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


def _silent(_message: str) -> None:
    return


class _Counter:
    """Counts Maven's downloads; a ticker thread reports them every PROGRESS_EVERY_S.

    The ticker, not the lines, sets the pace: the registry is one file of about 160 MB, during
    which Maven prints nothing, so the report names the file being fetched.
    """

    def __init__(self, label: str, progress: Callable[[str], None]) -> None:
        self.label, self.progress = label, progress
        self.files, self.size = 0, 0.0
        self.fetching: str | None = None  # the file Maven is downloading now
        self.began = time.monotonic()
        self._done = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="fetch-progress", daemon=True)

    def __enter__(self) -> Self:
        self._ticker.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._ticker.join()

    def line(self, text: str) -> None:
        started = _DOWNLOADING.search(text)
        if started is not None:
            self.fetching = started.group(1)
            return
        match = _DOWNLOADED.search(text)
        if match is None:
            return
        self.files += 1
        self.size += float(match.group(1)) * _UNITS[match.group(2)]
        self.fetching = None

    def _tick(self) -> None:
        while not self._done.wait(PROGRESS_EVERY_S):
            fetching = f", fetching {self.fetching}" if self.fetching else ""
            elapsed = time.monotonic() - self.began
            self.progress(f"{self.label}: {self.summary()} so far{fetching} ({elapsed:.0f} s)")

    def summary(self) -> str:
        files = f"{self.files} file{'' if self.files == 1 else 's'}"
        return f"{files}, {self.size / 1_000_000:.1f} MB downloaded"


def fetch_with_maven(
    *,
    mvn: str,
    pom: Path,
    output: Path,
    properties: dict[str, str],
    extra: list[str],
    label: str = "maven",
    progress: Callable[[str], None] = _silent,
) -> None:
    """Run ``copy-dependencies`` on pom into output; a clear error if mvn or the network fails.

    ``progress`` receives a line every PROGRESS_EVERY_S while Maven downloads, and a last one
    with what was downloaded in all (files Maven had in ~/.m2 already are not counted).
    """
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
        "-B",  # batch mode: one line per downloaded file, no progress bars
        "-Dstyle.color=never",
        "-f",
        str(pom),
        f"{DEPENDENCY_PLUGIN}:copy-dependencies",
        f"-DoutputDirectory={output}",
        *[f"-D{key}={value}" for key, value in properties.items()],
        *extra,
    ]
    with _Counter(label, progress) as counter:
        returncode, text = _run_maven(argv, counter.line)
    if returncode == 0 and counter.files:
        progress(f"{label}: {counter.summary()} in {time.monotonic() - counter.began:.0f} s")
    if returncode != 0:
        raise _failure(text, pom, argv)
    (output / COMPLETE).write_text("ok\n")


def _failure(text: str, pom: Path, argv: list[str]) -> LocalStackError:
    """What a failed Maven run means: the network, or something to see in its output."""
    first_error = next(
        (line for line in text.splitlines() if "[ERROR]" in line), text.strip()[-400:]
    )
    if any(sign in text for sign in _NETWORK_SIGNS):
        return PrerequisiteError(
            f"Maven could not download from its repository: {first_error.strip()}",
            hint="check the network and proxy (~/.m2/settings.xml); "
            "Maven Central must be reachable for the first `up`",
        )
    return LocalStackError(
        f"mvn failed on {pom}: {first_error.strip()}",
        hint=f"run it by hand to see the whole output: {' '.join(argv)}",
    )


def _run_maven(argv: list[str], on_line: Callable[[str], None]) -> tuple[int, str]:
    """Run Maven, passing each output line to ``on_line``; (exit code, its last lines)."""
    kept: deque[str] = deque(maxlen=_KEPT_LINES)
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as process:
        assert process.stdout is not None  # noqa: S101 - stdout=PIPE
        for line in process.stdout:
            kept.append(line)
            on_line(line)
        returncode = process.wait(timeout=1800)
    return returncode, "".join(kept)


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
