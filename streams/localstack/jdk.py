"""Find a Java runtime new enough for each local component.

The broker needs Java 17+; Apicurio Registry 3.3 is compiled for Java 21 (class file 65), so the
registry may need a different JDK from the broker on machines whose default is 17.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from streams.config import JavaSettings
from streams.exceptions import PrerequisiteError

__all__ = ["JavaRuntime", "find_java", "java_candidates", "parse_java_version"]

_VERSION_RE = re.compile(r'version "(?P<v>[^"]+)"')
# Where Debian, Ubuntu, Temurin's packages and SDKMAN put JDKs when they are not on PATH;
# STREAMS_JVM_DIRS (os.pathsep-separated) replaces this list.
_JVM_DIRS = ("/usr/lib/jvm", "/opt/java", "~/.sdkman/candidates/java")


def _jvm_dirs(settings: JavaSettings) -> list[Path]:
    configured = settings.jvm_dirs
    names = configured.split(os.pathsep) if configured is not None else list(_JVM_DIRS)
    return [Path(name).expanduser() for name in names if name]


@dataclass(frozen=True)
class JavaRuntime:
    """A java executable and its feature version (17, 21, 25, ...)."""

    path: Path
    major: int


def parse_java_version(text: str) -> int | None:
    """The feature version from ``java -version`` output: '1.8.0_x' -> 8, '17.0.15' -> 17."""
    match = _VERSION_RE.search(text)
    if match is None:
        return None
    parts = match.group("v").split(".")
    try:
        first = int(re.sub(r"\D.*", "", parts[0]) or "0")
        if first == 1 and len(parts) > 1:
            return int(parts[1])
    except ValueError:
        return None
    return first


def _probe(java: Path) -> JavaRuntime | None:
    try:
        done = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    major = parse_java_version(done.stderr + done.stdout)
    return None if major is None else JavaRuntime(java, major)


def java_candidates(env_var: str) -> list[Path]:
    """Java executables to try, most explicit first: $<env_var>, $JAVA_HOME, PATH, JVM folders.

    ``STREAMS_JVM_DIRS`` replaces the JVM folders searched (set it empty to search none).
    """
    settings = JavaSettings()
    homes = (settings.home(env_var), settings.system_java_home)
    seen = [Path(home) / "bin" / "java" for home in homes if home]
    on_path = shutil.which("java")
    if on_path:
        seen.append(Path(on_path))
    for folder in _jvm_dirs(settings):
        if folder.is_dir():
            seen.extend(sorted(folder.glob("*/bin/java"), reverse=True))
    unique: list[Path] = []
    for path in seen:
        if path.exists() and path.resolve() not in {p.resolve() for p in unique}:
            unique.append(path)
    return unique


def find_java(minimum: int, *, purpose: str, env_var: str) -> JavaRuntime:
    """The first Java runtime of at least ``minimum``, or a PrerequisiteError saying what to do."""
    found: list[JavaRuntime] = []
    for path in java_candidates(env_var):
        runtime = _probe(path)
        if runtime is None:
            continue
        if runtime.major >= minimum:
            return runtime
        found.append(runtime)
    if not found:
        raise PrerequisiteError(
            f"java not found: {purpose} needs Java {minimum}+",
            hint=f"install a JDK {minimum}+ (Debian: apt-get install openjdk-17-jdk-headless) "
            f"or set {env_var} to its home",
        )
    have = ", ".join(f"Java {r.major} at {r.path}" for r in found)
    raise PrerequisiteError(
        f"{purpose} needs Java {minimum}+, found only {have}",
        hint=f"install a JDK {minimum}+ and set {env_var} to its home",
    )
