"""A sink declared at module level for the crash tests, configured by environment variables.

``python -m tests.integration.sink_pipelines`` runs it until SIGTERM (or SIGKILL). Environment:
``SINK_TEST_TOPIC``, ``SINK_TEST_NAME`` (the group is ``sinktest.<name>``), ``SINK_TEST_DELAY_MS``
(per record, so that a kill lands mid-batch) and ``STREAMS_SINK_DATABASE_URL`` (the database).
The table has no unique key on purpose: a duplicate shows up as a second row.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from types import FrameType
from typing import Any

from streams.codecs import raw, text
from streams.record import Record
from streams.sinks import SinkRunner, SinkSpec, SinkTransaction

NUMBERS_SQL = "CREATE TABLE IF NOT EXISTS sink_numbers (n BIGINT NOT NULL, key TEXT, origin TEXT)"


def insert_number(record: Record[Any], tx: SinkTransaction) -> None:
    delay_ms = float(os.environ.get("SINK_TEST_DELAY_MS", "0"))
    if delay_ms:
        time.sleep(delay_ms / 1000)
    tx.execute(
        "INSERT INTO sink_numbers (n, key, origin) VALUES (:n, :key, :origin)",
        {"n": int(record.value), "key": record.key, "origin": tx.idempotency_key(record)},
    )


sink = SinkSpec(
    pipeline="sinktest",
    name=os.environ.get("SINK_TEST_NAME", "numbers"),
    inputs=(os.environ.get("SINK_TEST_TOPIC", "sinktest.numbers"),),
    input_codec=raw(),
    key_codec=text(),
    database="sqlite:///sinktest.db",  # the tests set STREAMS_SINK_DATABASE_URL
    handler=insert_number,
    setup_sql=(NUMBERS_SQL,),
)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    runner = SinkRunner(sink)

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        runner.request_stop()

    signal.signal(signal.SIGTERM, on_term)
    runner.run()


if __name__ == "__main__":
    main()
