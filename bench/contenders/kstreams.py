"""Kafka Streams: a Java topology with ``processing.guarantee=exactly_once_v2`` (the JVM peer).

The sources are in ``bench/contenders/kstreams/`` (``pom.xml``, ``src/``). ``prepare()`` builds
them once with Maven from Maven Central jars into a cache folder outside the repository, named
by a digest of the sources, so a second harness run (or a second round) does not rebuild.

``run(spec)`` replaces this Python process with the JVM (``os.execv``), so the process the
harness samples (CPU, RSS, exit code, SIGTERM) is the JVM itself: its CPU per record is measured
exactly as for the Python contenders, and no Python wrapper is counted. The JVM reads the spec,
marks its first consumed record, stops by itself after ``spec.records`` records and merges its
facts (versions, start-up phases, Kafka Streams' commit metrics) into the report file.

What the topology does per record, and how it keeps the run's bounds, is in the Java sources:
``Main.java`` (config), ``CopyProcessor.java`` (copy, record-bound commits),
``OrderTranscoder.java`` (the "avro" work: decode, validate into an Order, rebuild, encode).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.spec import RunSpec

SOURCES = Path(__file__).resolve().parent / "kstreams"
MAIN_CLASS = "bench.kstreams.Main"
# The JDK the contender runs on (and Maven builds with), unless BENCH_KSTREAMS_JAVA_HOME says.
DEFAULT_JAVA_HOME = Path("/usr/lib/jvm/java-17-openjdk-amd64")
BUILD_TIMEOUT_S = 900.0
# Kafka's clients log every config at INFO; the run only needs warnings.
JVM_OPTIONS = ("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",)


@dataclass(frozen=True, slots=True)
class Build:
    """A finished build: the classpath to run and where it lives."""

    directory: Path
    classpath: str
    digest: str


def java_home() -> Path:
    configured = os.environ.get("BENCH_KSTREAMS_JAVA_HOME")
    if configured:
        return Path(configured)
    if (DEFAULT_JAVA_HOME / "bin" / "java").exists():
        return DEFAULT_JAVA_HOME
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("no Java found: install a JDK 17+ or set BENCH_KSTREAMS_JAVA_HOME")
    return Path(java).resolve().parent.parent


def source_digest() -> str:
    """A digest of pom.xml and every file under src/: a changed source means a new build."""
    h = hashlib.sha256()
    files = [SOURCES / "pom.xml", *sorted(p for p in (SOURCES / "src").rglob("*") if p.is_file())]
    for path in files:
        h.update(str(path.relative_to(SOURCES)).encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(str(java_home()).encode())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    configured = os.environ.get("BENCH_KSTREAMS_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streams-bench" / "kstreams"


def cached_build() -> Build | None:
    digest = source_digest()
    directory = cache_root() / digest
    classpath_file = directory / "classpath"
    if not classpath_file.exists():
        return None
    return Build(directory, classpath_file.read_text().strip(), digest)


def build() -> Build:
    """Build the contender with Maven unless the cache holds this version of the sources."""
    done = cached_build()
    if done is not None:
        return done
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError("mvn not found: install Maven (apt-get install maven) to build kstreams")
    digest = source_digest()
    final = cache_root() / digest
    staging = cache_root() / f"{digest}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    target = staging / "target"
    started = time.monotonic()
    done_proc = subprocess.run(
        [mvn, "-B", "-q", "package", f"-Dkstreams.build.dir={target}"],
        cwd=SOURCES,
        env={**os.environ, "JAVA_HOME": str(java_home())},
        capture_output=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    if done_proc.returncode != 0:
        log = staging / "mvn.log"
        log.write_bytes(done_proc.stdout + done_proc.stderr)
        raise RuntimeError(f"mvn package failed (exit {done_proc.returncode}): see {log}")
    jars = [target / "kstreams-contender-1.jar", *sorted((target / "lib").glob("*.jar"))]
    # Paths of the final folder: the staging folder is renamed below.
    classpath = os.pathsep.join(str(final / jar.relative_to(staging)) for jar in jars)
    (staging / "classpath").write_text(classpath + "\n")
    (staging / "build_s").write_text(f"{time.monotonic() - started:.1f}\n")
    try:
        staging.rename(final)
    except OSError:  # another process finished the same build first
        shutil.rmtree(staging, ignore_errors=True)
    ready = cached_build()
    if ready is None:
        raise RuntimeError(f"the kstreams build left no classpath in {final}")
    return ready


def prepare() -> str:
    """Called once by ``bench.run`` before the rounds: build (or find) the contender."""
    cached = cached_build() is not None
    ready = build()
    seconds = (ready.directory / "build_s").read_text().strip()
    how = "cached" if cached else f"built in {seconds} s"
    return f"kstreams: {how} ({ready.directory})"


def run(spec: RunSpec) -> None:
    # bench.run built it before the rounds; a build here (sources changed mid-run, or a child
    # started by hand) would land in this run's "CPU-µs/rec process", so the report says so.
    built_here = cached_build() is None
    ready = build()
    java = java_home() / "bin" / "java"
    spec_path = Path(spec.work_dir) / f"{spec.group_id}.kstreams-spec.json"
    spec_path.write_text(spec.to_json())
    spec.add_report(
        kstreams_build=str(ready.directory),
        kstreams_built_in_this_process=built_here,
        jvm_options=list(JVM_OPTIONS),
        fetch_queue_backoff_ms_applied=False,
        exec_at=time.monotonic(),
    )
    sys.stdout.flush()
    sys.stderr.flush()
    # The JVM takes this process's place, so the harness measures the JVM and nothing else.
    argv = [str(java), *JVM_OPTIONS, "-cp", ready.classpath, MAIN_CLASS, str(spec_path)]
    os.execv(java, argv)  # noqa: S606  # a fixed executable and argv, no shell involved
