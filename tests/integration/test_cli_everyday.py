"""The everyday commands as a user runs them, on the real broker and registry.

`streams topics create|list|describe|delete`, `streams produce` and `streams tail` run as
subprocesses from the folder of a pipeline module of the test's own (no PYTHONPATH entry for
it: the folder you stand in is where your module is looked up), and their exact lines are
asserted, the record timestamps masked. A stage with missing topics says it waits, and stops
within seconds naming the reference it was started with.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from tests.integration.conftest import Cluster

pytestmark = pytest.mark.integration

STREAMS = str(Path(sys.executable).with_name("streams"))
ROOT = Path(__file__).resolve().parents[2]
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
_LOG_TIME = re.compile(r"\] \d\d:\d\d:\d\d ")

APP = """\
from datetime import datetime

from pydantic import BaseModel, Field

from streams import DeadLetter, Pipeline, Record, codecs


class Order(BaseModel):
    order_id: str
    quantity: int = Field(gt=0)


class OrderPlaced(BaseModel):
    order_id: str
    customer_id: str
    sku: str
    quantity: int
    unit_price_cents: int
    placed_at: datetime


pipeline = Pipeline("{name}", partitions=1)


@pipeline.stage(
    "accept",
    inputs=["{name}.orders"],
    input=codecs.json(Order),
    outputs={{"{name}.placed": codecs.avro(OrderPlaced, "orders/order_placed.v1.avsc")}},
)
def accept(record: Record[Order]) -> None:
    raise DeadLetter("not today")
"""


@dataclass(frozen=True)
class App:
    folder: Path
    name: str

    @property
    def topics(self) -> list[str]:
        group = f"{self.name}.accept"
        return [
            f"{self.name}.orders",
            f"{self.name}.placed",
            f"{group}.retry.5s",
            f"{group}.retry.30s",
            f"{group}.retry.5m",
            f"{group}.dlq",
        ]

    def streams(
        self, *args: str, stdin: str | bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        data = stdin.encode() if isinstance(stdin, str) else stdin
        done = subprocess.run(
            [STREAMS, *args],
            cwd=self.folder,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "STREAMS_SCHEMAS_DIR": str(ROOT / "schemas"),
            },
            input=data,
            capture_output=True,
            timeout=90,
            check=False,
        )
        return subprocess.CompletedProcess(
            done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
        )


@pytest.fixture
def app(tmp_path: Path, admin: AdminClient) -> Iterator[App]:
    name = f"everyday{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "app.py").write_text(APP.format(name=name), encoding="utf-8")
    made = App(folder, name)
    yield made
    existing = admin.list_topics(timeout=30).topics
    doomed = [topic for topic in made.topics if topic in existing]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            future.result(timeout=30)


def _lines(text: str) -> list[str]:
    return _TIME.sub("<time>", text).splitlines()


# Over 50 lines: one user's session, command after command, each output asserted.
def test_topics_create_list_describe_delete_from_the_folder_of_the_module(app: App) -> None:
    """Regression: `cd app && streams topics create app:pipeline` said "cannot import 'app'"."""
    created = app.streams("topics", "create", "app:pipeline")

    assert created.returncode == 0, created.stderr
    assert [line for line in created.stdout.splitlines() if "_streams.stats" not in line] == [
        f"created   {topic}" for topic in app.topics
    ]

    listed = app.streams("topics", "list", "--pipeline", "app:pipeline")

    n = app.name
    assert listed.returncode == 0, listed.stderr
    assert [" ".join(line.split()) for line in listed.stdout.splitlines()] == [
        "TOPIC PARTITIONS ROLE",
        f"{n}.orders 1 input of stage accept",
        f"{n}.placed 1 output of stage accept",
        f"{n}.accept.retry.5s 1 retry tier 5s of stage accept",
        f"{n}.accept.retry.30s 1 retry tier 30s of stage accept",
        f"{n}.accept.retry.5m 1 retry tier 5m of stage accept",
        f"{n}.accept.dlq 1 DLQ of stage accept",
        "_streams.stats 1 internal (worker stats for `streams monitor`)",
        "_streams.replay 1 internal (the replay ledger of `streams dlq` and `streams replay`)",
    ]

    described = app.streams("topics", "describe", f"{n}.accept.dlq", "--pipeline", "app:pipeline")

    assert described.returncode == 0, described.stderr
    assert described.stdout.splitlines() == [
        f"{n}.accept.dlq  partitions 1  replication factor 1  offsets held 0",
        "  role:    DLQ of stage accept",
        "  config:  (broker defaults)",
        "  PARTITION  LEADER  REPLICAS  ISR  EARLIEST  LATEST",
        "  0          1       1         1    0         0",
    ]
    as_json = json.loads(app.streams("topics", "describe", f"{n}.orders", "--json").stdout)
    assert as_json["topics"][0]["partitions"][0]["latest"] == 0

    deleted = app.streams("topics", "delete", f"{n}.orders", "--yes")

    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.splitlines() == [f"deleted   {n}.orders"]
    after = app.streams("topics", "list", "--pipeline", "app:pipeline", "--json")
    (orders,) = [t for t in json.loads(after.stdout)["topics"] if t["name"] == f"{n}.orders"]
    assert orders == {
        "name": f"{n}.orders",
        "partitions": None,
        "exists": False,
        "roles": [{"role": "input", "stage": "accept"}],
    }

    again = app.streams("topics", "delete", f"{n}.orders", "--yes")

    assert again.returncode == 1
    assert again.stderr.splitlines() == [
        f"error: no topic {n}.orders at {os.environ['STREAMS_BOOTSTRAP_SERVERS']}",
        "hint: `streams topics list` shows the topics there are",
    ]


# Over 50 lines: one user's session, command after command, each output asserted.
def test_produce_then_tail_with_keys_headers_null_and_binary_values(app: App) -> None:
    assert app.streams("topics", "create", "app:pipeline").returncode == 0
    topic = f"{app.name}.orders"

    produced = app.streams(
        "produce",
        topic,
        "-K",
        "|",
        "-H",
        "source=test",
        "-H",
        "trace",
        stdin='o-1|{"order_id": "o-1", "quantity": 2}\n\no-2|{"order_id": "o-2"}\n',
    )
    binary = app.streams("produce", topic, "--key", "b-1", stdin=b"\x00\x01bin\xff\n")

    assert produced.returncode == 0, produced.stderr
    assert produced.stdout.splitlines() == [f"wrote 2 record(s) to {topic} (partition 0: 2)"]
    assert binary.stdout.splitlines() == [f"wrote 1 record(s) to {topic} (partition 0: 1)"]

    tailed = app.streams("tail", topic, "--from-beginning")

    assert tailed.returncode == 0, tailed.stderr
    assert _lines(tailed.stdout) == [
        f'{topic}/0@0  <time>  key=o-1  {{"order_id": "o-1", "quantity": 2}}',
        "  source: test",
        "  trace: (null)",
        f'{topic}/0@1  <time>  key=o-2  {{"order_id": "o-2"}}',
        "  source: test",
        "  trace: (null)",
        f"{topic}/0@2  <time>  key=b-1  \\x00\\x01bin\\xff",
    ]

    last = app.streams("tail", topic, "-n", "1", "--json")

    record = json.loads(last.stdout)
    assert {k: v for k, v in record.items() if not k.startswith("timestamp")} == {
        "topic": topic,
        "partition": 0,
        "offset": 2,
        "key": "b-1",
        "value": None,
        "value_base64": "AAFiaW7/",
        "headers": [],
    }

    decoded = app.streams("tail", topic, "--pipeline", "app:pipeline", "--max", "2")

    assert _lines(decoded.stdout) == [
        f'{topic}/0@0  <time>  key=o-1  {{"order_id":"o-1","quantity":2}}',
        "  source: test",
        "  trace: (null)",
        f'{topic}/0@1  <time>  key=o-2  {{"order_id": "o-2"}}',
        "  ! not decoded: record value is not a valid Order in JSON: quantity: Field required",
        "  source: test",
        "  trace: (null)",
    ]


def test_produce_avro_through_the_stage_codec_and_tail_decodes_it(app: App) -> None:
    assert app.streams("topics", "create", "app:pipeline").returncode == 0
    topic = f"{app.name}.placed"
    order = {
        "order_id": "o-7",
        "customer_id": "c-1",
        "sku": "sku-42",
        "quantity": 3,
        "unit_price_cents": 250,
        "placed_at": "2026-01-02T03:04:05+00:00",
    }

    produced = app.streams(
        "produce", topic, "--pipeline", "app:pipeline", "--key", "o-7", stdin=json.dumps(order)
    )

    assert produced.returncode == 0, produced.stderr
    assert produced.stdout.splitlines() == [f"wrote 1 record(s) to {topic} (partition 0: 1)"]
    decoded = app.streams("tail", topic, "--pipeline", "app:pipeline")
    assert _lines(decoded.stdout) == [
        (
            f"{topic}/0@0  <time>  key=o-7  "
            '{"order_id":"o-7","customer_id":"c-1","sku":"sku-42","quantity":3,'
            '"unit_price_cents":250,"placed_at":"2026-01-02T03:04:05Z"}'
        )
    ]
    raw = app.streams("tail", topic)
    assert raw.stdout.startswith(f"{topic}/0@0  ")
    assert "key=o-7  \\x00\\x00\\x00" in raw.stdout  # Confluent wire format: magic 0, schema id

    rejected = app.streams(
        "produce",
        topic,
        "--pipeline",
        "app:pipeline",
        stdin=json.dumps(order) + "\n" + json.dumps({"order_id": "o-8"}) + "\n",
    )

    assert rejected.returncode == 1
    assert rejected.stderr.splitlines()[0].startswith(
        "error: line 2: record value is not a valid OrderPlaced in JSON: customer_id: Field "
        "required; sku: Field required"
    )
    assert rejected.stderr.splitlines()[1] == (
        "hint: 1 record(s) before it were written; fix the line (or leave out --pipeline to "
        "write lines as they are)"
    )


def test_produce_and_tail_name_a_topic_that_does_not_exist(app: App) -> None:
    servers = os.environ["STREAMS_BOOTSTRAP_SERVERS"]
    missing = f"{app.name}.nope"

    produced = app.streams("produce", missing, stdin="x\n")
    tailed = app.streams("tail", missing)

    assert produced.returncode == tailed.returncode == 1
    assert produced.stderr.splitlines() == [
        f"error: no topic {missing} at {servers}",
        (
            "hint: create it (`streams topics create MODULE:PIPELINE` for a pipeline's topics); "
            "`streams topics list` shows the topics there are"
        ),
    ]
    assert tailed.stderr.splitlines() == [
        f"error: no topic {missing} at {servers}",
        "hint: `streams topics list` shows the topics there are",
    ]


def test_a_stage_with_missing_topics_says_it_waits_and_names_the_reference_in_seconds(
    app: App,
) -> None:
    """Regression: 20 s of silence, then a hint naming `MODULE:<pipeline>`."""
    began = time.monotonic()
    done = app.streams("run", "app:pipeline", "--all")
    elapsed = time.monotonic() - began

    assert done.returncode == 5, done.stderr
    assert elapsed < 15, elapsed
    n, servers = app.name, os.environ["STREAMS_BOOTSTRAP_SERVERS"]
    missing = ", ".join(
        [
            f"{n}.orders",
            *[f"{n}.accept.retry.{t}" for t in ("5s", "30s", "5m")],
            f"{n}.placed",
            f"{n}.accept.dlq",
        ]
    )
    lines = [_LOG_TIME.sub("] ", line) for line in done.stderr.splitlines()]
    assert (
        f"[accept/0] INFO    streams.stage: waiting up to 5 s for topics {missing} "
        "(not in the broker's metadata yet)"
    ) in lines
    assert (
        f"[accept/0] ERROR   streams.worker: stage {n}.accept: missing topics {missing} at "
        f'{servers} hint="create them: streams topics create app:pipeline (the stage never '
        'creates topics by itself)"'
    ) in lines


def test_run_hands_the_profile_to_its_workers(app: App, cluster: Cluster) -> None:
    """`streams run --profile P`: the workers (processes of their own) use the profile too."""
    assert app.streams("topics", "create", "app:pipeline").returncode == 0
    (app.folder / "streams.toml").write_text(
        f'[profiles.here]\nbootstrap_servers = "{cluster.bootstrap_servers}"\n', encoding="utf-8"
    )
    env = {k: v for k, v in os.environ.items() if k != "STREAMS_BOOTSTRAP_SERVERS"}
    env.update(PYTHONPATH=str(ROOT), STREAMS_SCHEMAS_DIR=str(ROOT / "schemas"))
    with subprocess.Popen(
        [STREAMS, "run", "app:pipeline", "--all", "--profile", "here"],
        cwd=app.folder,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    ) as run:
        assert run.stderr is not None
        seen = []
        for line in run.stderr:
            seen.append(line)
            if "stage started" in line or "ERROR" in line:
                break
        run.send_signal(signal.SIGTERM)
        seen.extend(run.stderr)
        assert run.wait(timeout=60) == 0, "".join(seen)

    toml = app.folder / "streams.toml"
    assert any(
        f"Kafka at {cluster.bootstrap_servers} (bootstrap_servers of profile 'here' in {toml})"
        in line
        for line in seen
    ), "".join(seen)
