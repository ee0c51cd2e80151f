"""The operator's first day, as the `streams` command shows it: none of these needs a broker.

Every test runs the real command in a subprocess, in a folder of its own, with an environment
that holds no STREAMS_* variable it did not set, and asserts the exact lines it prints:
loading your own module (`cd app && streams ... app:pipeline`), the errors of a module that is
missing, mistyped or raises, what --help says, usage errors (exit 2), where the connection
settings come from (flag > environment > profile > streams.toml > default), colour only on a
terminal and never with NO_COLOR, and `schemas check` outside the project folder.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

STREAMS = str(Path(sys.executable).with_name("streams"))
ROOT = Path(__file__).resolve().parents[2]
# what click's wrapped help text could split: compare help with whitespace collapsed
_ESC = "\x1b["

APP = """\
from streams import Pipeline

pipeline = Pipeline("firstday")


@pipeline.stage("copy", inputs=["firstday.in"], outputs=["firstday.out"])
def copy(record):
    return record.value
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMS_")}
    env.pop("NO_COLOR", None)
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")  # never the user's profiles file
    env["STREAMS_HOME"] = str(tmp_path / "home")
    env.update(extra)
    return env


def _streams(
    *args: str, cwd: Path, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STREAMS, *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def app(tmp_path: Path) -> Path:
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "app.py").write_text(APP, encoding="utf-8")
    return folder


# --- your own module, from the folder you stand in -----------------------------------------


def test_a_module_in_the_working_directory_is_found_without_pythonpath(
    app: Path, tmp_path: Path
) -> None:
    """Regression: `cd app && streams ... app:pipeline` said "cannot import 'app'"."""
    env = _env(tmp_path)
    env.pop("PYTHONPATH", None)
    env["PYTHONPATH"] = str(ROOT)  # the streams package itself, not the app's folder

    # loading the pipeline succeeds; the unknown stage is the first error (no broker needed)
    done = _streams("run", "app:pipeline", "--stage", "nosuch", cwd=app, env=env)

    assert done.stderr.splitlines() == [
        "error: pipeline 'firstday' has no stage 'nosuch' (stages: copy)",
        "hint: name one of its stages (the S of the consumer group P.S)",
    ]
    assert done.returncode == 1


def test_a_mistyped_attribute_names_the_pipelines_of_the_module(app: Path, tmp_path: Path) -> None:
    done = _streams("run", "app:pipline", "--all", cwd=app, env=_env(tmp_path))

    assert done.stderr.splitlines() == [
        "error: module 'app' has no attribute 'pipline'",
        "hint: its pipelines: app:pipeline",
    ]
    assert done.returncode == 1


def test_a_module_that_raises_at_import_is_one_line_and_a_hint(app: Path, tmp_path: Path) -> None:
    """Regression: a module raising at import printed a 48-line click traceback."""
    (app / "broken.py").write_text(
        "from streams import Pipeline\n\nRATE = 1 / 0\n", encoding="utf-8"
    )

    done = _streams("run", "broken:pipeline", "--all", cwd=app, env=_env(tmp_path))

    assert done.stderr.splitlines() == [
        "error: importing 'broken' failed: ZeroDivisionError: division by zero (broken.py, line 3)",
        "hint: the error is in your code; `python -c 'import broken'` shows the traceback",
    ]
    assert done.returncode == 1


def test_a_module_that_imports_a_missing_package_says_which(app: Path, tmp_path: Path) -> None:
    (app / "needs.py").write_text("import no_such_package_x1\n", encoding="utf-8")

    done = _streams("run", "needs:pipeline", "--all", cwd=app, env=_env(tmp_path))

    assert done.stderr.splitlines() == [
        (
            "error: importing 'needs' failed: ModuleNotFoundError: No module named "
            "'no_such_package_x1' (needs.py, line 1)"
        ),
        (
            "hint: needs imports 'no_such_package_x1', which is not installed in this environment "
            f"({sys.prefix}): pip install it there"
        ),
    ]


def test_a_module_that_is_not_there_says_where_it_was_looked_for(app: Path, tmp_path: Path) -> None:
    done = _streams("run", "shop:pipeline", "--all", cwd=app, env=_env(tmp_path))

    assert done.stderr.splitlines() == [
        f"error: cannot import 'shop': no module 'shop' in {app} or on the Python path",
        (
            "hint: run from the folder that holds shop.py or shop/, set PYTHONPATH to that folder, "
            "or pip install the project that has it"
        ),
    ]


def test_a_file_name_instead_of_a_module_name_says_what_to_write(app: Path, tmp_path: Path) -> None:
    done = _streams("run", "./app.py:pipeline", "--all", cwd=app, env=_env(tmp_path))

    assert done.stderr.splitlines() == [
        "error: './app.py:pipeline' names a file, not a module",
        "hint: give the module's dotted name, without .py: app:pipeline",
    ]


# --- what --help tells, and usage errors -----------------------------------------------------


def _help(*args: str, tmp_path: Path) -> str:
    done = _streams(*args, "--help", cwd=tmp_path, env=_env(tmp_path))
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_run_help_names_the_reference_the_module_path_and_the_exit_codes(tmp_path: Path) -> None:
    text = _help("run", tmp_path=tmp_path)

    assert "Usage: streams run [OPTIONS] MODULE:PIPELINE" in text
    assert "The module is" in text
    assert "looked up in the working directory first, then on PYTHONPATH" in " ".join(text.split())
    for line in (
        "    0  stopped on request (SIGTERM, Ctrl-C): every worker drained and committed",
        "    2  bad usage (an unknown option, --stage with --all, a bad slot option)",
        "    3  a worker stopped on a record it cannot process (see its error line)",
        "    4  another live worker runs the same slot (refused at start, or fenced)",
        "    5  a worker cannot start: missing topics (`streams topics create`), bad settings,",
    ):
        assert line in text.splitlines()


def test_local_up_help_names_the_state_folder_and_the_port_variables(tmp_path: Path) -> None:
    lines = _help("local", "up", tmp_path=tmp_path).splitlines()

    for line in (
        "    STREAMS_HOME             state folder: jars, data, logs, pid files [~/.streams-local]",
        "    STREAMS_KAFKA_PORT       the broker's port [19092]",
        "    STREAMS_CONTROLLER_PORT  the KRaft controller's port [19093]",
        "    STREAMS_REGISTRY_PORT    the registry's port [18081]; its health port is this + 1",
    ):
        assert line in lines


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("--stage", "copy", "--all"), "Error: give --stage S (one or more) or --all, not both"),
        ((), "Error: give --stage S (one or more), or --all for every stage"),
    ],
    ids=["both", "neither"],
)
def test_stage_with_all_or_neither_is_a_usage_error_exit_2(
    app: Path, tmp_path: Path, args: tuple[str, ...], error: str
) -> None:
    """Regression: these exited 1, like a failure, instead of click's 2 for bad usage."""
    done = _streams("run", "app:pipeline", *args, cwd=app, env=_env(tmp_path))

    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "Usage: streams run [OPTIONS] MODULE:PIPELINE",
        "Try 'streams run -h' for help.",
        "",
        error,
    ]


def test_topics_delete_asks_and_without_a_terminal_refuses_unless_yes(tmp_path: Path) -> None:
    done = _streams("topics", "delete", "orders.raw", cwd=tmp_path, env=_env(tmp_path), stdin="")

    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: refusing to delete orders.raw without confirmation",
        "hint: pass --yes to delete without asking",
    ]


# --- connection settings: flag > environment > profile > streams.toml > default ----------


def _setting(tmp_path: Path, cwd: Path, *args: str, **env: str) -> list[str]:
    done = _streams("config", "show", *args, cwd=cwd, env=_env(tmp_path, **env))
    assert done.returncode == 0, done.stderr
    return [" ".join(line.split()) for line in done.stdout.splitlines()[:2]]


def test_connection_settings_follow_flag_env_profile_file_default(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    (project / "streams.toml").write_text(
        'bootstrap_servers = "file:9092"\n'
        'schema_registry_url = "http://registry.file:8081"\n'
        "[profiles.staging]\n"
        'bootstrap_servers = "staging:9092"\n',
        encoding="utf-8",
    )
    profiles = tmp_path / "xdg" / "streams" / "profiles.toml"
    profiles.parent.mkdir(parents=True)
    profiles.write_text('[prod]\nbootstrap_servers = "prod:9092"\n', encoding="utf-8")
    sub = project / "sub"  # streams.toml is found in the nearest folder above too
    toml = project / "streams.toml"

    assert _setting(tmp_path, tmp_path) == [
        "bootstrap_servers 127.0.0.1:19092 default: the local stack",
        "schema_registry_url http://127.0.0.1:18081/apis/ccompat/v7 default: the local stack",
    ]
    assert _setting(tmp_path, sub) == [
        f"bootstrap_servers file:9092 bootstrap_servers in {toml}",
        f"schema_registry_url http://registry.file:8081 schema_registry_url in {toml}",
    ]
    assert _setting(tmp_path, sub, "--profile", "staging")[0] == (
        f"bootstrap_servers staging:9092 bootstrap_servers of profile 'staging' in {toml}"
    )
    assert _setting(tmp_path, sub, STREAMS_PROFILE="prod")[0] == (
        f"bootstrap_servers prod:9092 bootstrap_servers of profile 'prod' in {profiles}"
    )
    assert _setting(tmp_path, sub, "--profile", "prod", STREAMS_BOOTSTRAP_SERVERS="env:9092")[
        0
    ] == ("bootstrap_servers env:9092 STREAMS_BOOTSTRAP_SERVERS")
    assert _setting(
        tmp_path, sub, "--bootstrap-servers", "flag:9092", STREAMS_BOOTSTRAP_SERVERS="env:9092"
    )[0] == ("bootstrap_servers flag:9092 --bootstrap-servers")


def test_a_typo_in_streams_toml_is_an_error_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "streams.toml").write_text('bootstrap_server = "x:9092"\n', encoding="utf-8")

    done = _streams("topics", "list", cwd=tmp_path, env=_env(tmp_path))

    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        (
            f"error: {tmp_path / 'streams.toml'}: unknown setting 'bootstrap_server' "
            "(did you mean 'bootstrap_servers'?)"
        ),
        (
            "hint: the settings a file can hold: bootstrap_servers, schema_registry_url, "
            "security_protocol, sasl_mechanism, sasl_username, sasl_password, kafka_extra"
        ),
    ]


def test_an_unknown_profile_names_the_files_and_the_profiles_there(tmp_path: Path) -> None:
    (tmp_path / "streams.toml").write_text(
        '[profiles.staging]\nbootstrap_servers = "s:9092"\n', encoding="utf-8"
    )

    done = _streams("topics", "list", "--profile", "prod", cwd=tmp_path, env=_env(tmp_path))

    profiles = tmp_path / "xdg" / "streams" / "profiles.toml"
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        (
            f"error: no profile 'prod' in {tmp_path / 'streams.toml'} ([profiles.prod]) or "
            f"{profiles} ([prod])"
        ),
        "hint: profiles found: staging",
    ]


# --- colour: only on a terminal, never with NO_COLOR ----------------------------------------


def _on_a_terminal(args: list[str], env: dict[str, str], cwd: Path) -> str:
    """What the command writes to a pseudo-terminal."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [STREAMS, *args], cwd=cwd, env=env, stdin=follower, stdout=follower, stderr=follower
    )
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 30)
        if not ready:
            break
        try:
            data = os.read(leader, 4096)
        except OSError:  # the follower closed: the command ended
            break
        if not data:
            break
        chunks.append(data)
    process.wait(timeout=30)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_colour_only_on_a_terminal_and_never_with_no_color(tmp_path: Path) -> None:
    args = ["config", "show"]

    assert _ESC in _on_a_terminal(args, _env(tmp_path), tmp_path)
    assert _ESC not in _on_a_terminal(args, _env(tmp_path, NO_COLOR="1"), tmp_path)
    piped = _streams(*args, cwd=tmp_path, env=_env(tmp_path))
    assert piped.returncode == 0
    assert _ESC not in piped.stdout


# --- schemas check looks where the codecs look ----------------------------------------------


def test_schemas_check_outside_the_project_folder_uses_the_codecs_schemas(
    tmp_path: Path,
) -> None:
    """Regression: it defaulted to ./schemas and failed (exit 2) in any other folder."""
    done = _streams("schemas", "check", "--no-registry", cwd=tmp_path, env=_env(tmp_path))

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"2 schema file(s), 2 subject(s) under {ROOT / 'schemas'}; no registry",
        "  ok    orders.OrderPlaced  v1",
        "  ok    orders.OrderPriced  v1",
        "ok",
    ]
