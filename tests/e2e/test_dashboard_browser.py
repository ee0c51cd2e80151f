"""The dashboard in a real headless Chromium, over a real running pipeline and monitor.

Needs Debian's Chromium at /usr/bin/chromium (``ops/ensure-deps.sh`` installs it) and the
``playwright`` package (no ``playwright install``: the system browser is used).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streams.config import KafkaSettings
from streams.examples.hello import RAW, RawOrder, pipeline
from streams.localstack.process import free_port
from streams.observability.server import Monitor
from streams.topics import ensure_topics
from tests.integration.conftest import Cluster

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _produce(config: dict[str, str], count: int, stop: threading.Event, rate: float) -> None:
    producer = Producer({**config, "linger.ms": 20})
    for n in range(count):
        if stop.is_set():
            break
        order = RawOrder(
            order_id=f"e2e-{time.time_ns()}-{n}",
            customer_id=f"c-{n % 50:03d}",
            sku=f"sku-{n % 7:02d}",
            quantity=1 + n % 4,
            unit_price_cents=100 + n,
            placed_at=datetime.now(UTC),
        )
        producer.produce(RAW, order.model_dump_json().encode(), key=order.order_id)
        producer.poll(0)
        time.sleep(1 / rate)
    producer.flush(30)


@pytest.fixture
def running(cluster: Cluster, tmp_path: Path) -> Iterator[str]:
    """The hello pipeline's workers, a steady stream of orders and the monitor; its URL."""
    ensure_topics(pipeline, kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers))
    env = {**os.environ, "STREAMS_STAGE_STATS_INTERVAL_S": "1"}
    cli = [sys.executable, "-m", "streams.cli.main"]
    with (tmp_path / "workers.log").open("wb") as log:
        workers = subprocess.Popen(
            [*cli, "run", "streams.examples.hello:pipeline", "--all"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    port = free_port()
    with (tmp_path / "monitor.log").open("wb") as log:
        monitor = subprocess.Popen(
            [
                *cli,
                "monitor",
                "--pipeline",
                "streams.examples.hello:pipeline",
                "--port",
                str(port),
                "--interval",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    stop = threading.Event()
    feeder = threading.Thread(target=_produce, args=(cluster.client_config(), 100_000, stop, 200.0))
    feeder.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as answer:  # noqa: S310
                    if answer.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or monitor.poll() is not None:
                    raise
                time.sleep(0.5)
        yield url
    finally:
        stop.set()
        feeder.join(timeout=60)
        _stop(monitor)
        _stop(workers)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (ops/ensure-deps.sh)")
def test_dashboard_shows_the_running_pipeline_live(running: str) -> None:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only this test needs it

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(running + "/")
            for stage in ("validate", "price"):
                box = page.locator(f'g.stage[data-stage="{stage}"]')
                box.wait_for(timeout=30_000)
            # both stages run and keep up with 200 orders/s: the scenario must show OK (not
            # WARN/ERR); a stage may need a few samples to catch up after its workers start
            page.wait_for_function(
                """() => ['validate', 'price'].every(s => document.querySelector(
                        `g.stage[data-stage="${s}"] .stage-status`)?.textContent === 'OK')""",
                timeout=90_000,
            )
            for stage in ("validate", "price"):
                box = page.locator(f'g.stage[data-stage="{stage}"]')
                assert box.locator(".stage-status").text_content() == "OK"
                # `streams run --all` runs one worker per stage and says so in _streams.stats
                workers = box.locator('text.value[data-field="workers"]').text_content() or ""
                assert workers.startswith("1/1"), workers
            # fresh data: its age is shown and no banner
            assert page.locator("#error").is_hidden()
            age = page.locator("#data-age").text_content() or ""
            assert re.fullmatch(r"data \d+\.\d+ s old", age), age
            assert page.locator("#data-age").get_attribute("data-stale") == "0"
            # a lag line needs a few samples (one per second) and refreshes (every 2 s)
            page.wait_for_function(
                """() => [...document.querySelectorAll('svg[data-chart="lag"] path.series')]
                        .some(p => Number(p.dataset.points) >= 3)""",
                timeout=60_000,
            )

            def numbers() -> list[str]:
                values = []
                for stage in ("validate", "price"):
                    box = page.locator(f'g.stage[data-stage="{stage}"] text.value')
                    values.extend(box.all_text_contents())
                values.extend(page.locator("#workers tbody td.num").all_text_contents())
                return values

            first = numbers()
            page.wait_for_function(
                "before => document.querySelector('#pipelines').innerText !== before",
                arg=page.locator("#pipelines").inner_text(),
                timeout=30_000,
            )
            second = numbers()
            assert first != second, first
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        finally:
            browser.close()


def _health(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as answer:  # noqa: S310
            return int(answer.status), bytes(answer.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, bytes(error.read())


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (ops/ensure-deps.sh)")
def test_dashboard_says_when_its_data_is_stale_or_the_last_sample_failed(cluster: Cluster) -> None:
    """The sampler stops: the banner says how old the data is, /health answers 503. Then a
    sample fails with an empty message: the red banner stays (it used to hide on "")."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only this test needs it

    monitor = Monitor(
        [pipeline], kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap_servers), interval_s=1
    )
    monitor.start("127.0.0.1", 0)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(monitor.url + "/")
                page.wait_for_function(
                    """() => /^data [0-9.]+ s old$/.test(
                            document.querySelector('#data-age').textContent)""",
                    timeout=30_000,
                )
                assert page.locator("#error").is_hidden()
                assert _health(monitor.url)[0] == 200

                monitor._stop.set()  # no more samples: the data ages
                assert monitor._sampler is not None
                monitor._sampler.join(timeout=30)
                deadline = time.monotonic() + 30
                while (health := _health(monitor.url))[0] != 503 and time.monotonic() < deadline:
                    time.sleep(0.2)
                status, body = health
                assert status == 503
                answer = json.loads(body)
                assert answer["status"] == "stale"
                # both rounded to 0.1 s in the body: equal once rounded is still stale (503 says so)
                assert answer["age_s"] >= answer["stale_after_s"]
                page.wait_for_function(
                    "() => document.querySelector('#error').dataset.state === 'stale'",
                    timeout=30_000,
                )
                banner = page.locator("#error").text_content() or ""
                assert banner.startswith("Stale data: the last successful sample is "), banner
                assert page.locator("#data-age").get_attribute("data-stale") == "1"

                # a fresh sample that failed, with an empty message (what a TimeoutError gave)
                snapshot = monitor.snapshot
                assert snapshot is not None
                monitor.interval_s = 60  # so that the injected sample stays fresh meanwhile
                monitor._snapshot = replace(snapshot, taken_at=time.time(), error="", errors=1)
                page.wait_for_function(
                    "() => document.querySelector('#error').dataset.state === 'failed'",
                    timeout=30_000,
                )
                assert page.locator("#error").is_visible()
                banner = page.locator("#error").text_content() or ""
                assert banner == (
                    "Last sample failed (1 so far), showing the last good one: no message given"
                )
                assert _health(monitor.url)[0] == 200  # fresh: /health looks at the age only
                page.screenshot(path=str(ARTIFACTS / "dashboard-failed.png"), full_page=True)
            finally:
                browser.close()
    finally:
        monitor.close()
