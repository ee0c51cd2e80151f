"""The contenders: who copies the input topic to the output topic, and how they are started.

Each contender is a module with ``run(spec: RunSpec) -> None`` that runs in its own process
(``python -m bench.child``), so RSS and CPU are measured per contender. A ``run`` that raises
NotImplementedError is reported as "not available" and skipped in later rounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Interpreter = Literal["main", "peers"]


@dataclass(frozen=True, slots=True)
class Contender:
    name: str
    module: str
    # "main" runs under the project's .venv (same confluent-kafka as the framework);
    # "peers" under .bench-venv, which bench/setup-peers.sh creates.
    interpreter: Interpreter
    # True: the contender exits by itself after RunSpec.records records. False: the harness
    # sends SIGTERM as soon as its verifier has seen every output record.
    stops_itself: bool
    description: str
    # Overrides of the run's transaction bounds (None = use the run's --txn-records/--txn-interval).
    txn_max_records: int | None = None
    txn_interval_s: float | None = None
    # True: the module has ``prepare() -> str``, which bench.run calls once before the rounds
    # (a build step); it returns a line to print, and an exception makes it "not available".
    prepare: bool = False


CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in (
        Contender(
            "b1",
            "bench.contenders.b1",
            "main",
            stops_itself=True,
            description="confluent-kafka loop consume(500) -> produce -> commit(async), "
            "no transactions (at-least-once ceiling)",
        ),
        Contender(
            "b1-1s",
            "bench.contenders.b1",
            "main",
            stops_itself=True,
            description="b1 committing offsets every 1 s instead of after every batch",
            txn_max_records=0,
            txn_interval_s=1.0,
        ),
        Contender(
            "b2",
            "bench.contenders.b2",
            "main",
            stops_itself=True,
            description="the b1 loop with one transaction per --txn-records records or "
            "--txn-interval seconds, read_committed, send_offsets_to_transaction",
        ),
        Contender(
            "b2-1s",
            "bench.contenders.b2",
            "main",
            stops_itself=True,
            description="b2 committing on time only, every 1 s (no record bound)",
            txn_max_records=0,
            txn_interval_s=1.0,
        ),
        Contender(
            "ours",
            "bench.contenders.ours",
            "main",
            stops_itself=True,
            description="this project's stage runtime (hook in bench/contenders/ours.py)",
        ),
        Contender(
            "kstreams",
            "bench.contenders.kstreams",
            "main",
            stops_itself=True,
            description="Kafka Streams (Java) topology source -> processor -> sink, "
            "processing.guarantee=exactly_once_v2 (sources in bench/contenders/kstreams/)",
            prepare=True,
        ),
        Contender(
            "quix",
            "bench.contenders.quix",
            "peers",
            stops_itself=False,
            description='Quix Streams Application(processing_guarantee="exactly-once")',
        ),
        Contender(
            "faust",
            "bench.contenders.faust_agent",
            "peers",
            stops_itself=False,
            description='faust-streaming agent, processing_guarantee="exactly_once", as shipped '
            "(its sink writes bypass the transaction: faust-streaming/faust#177)",
        ),
        Contender(
            "faust-eos",
            "bench.contenders.faust_agent",
            "peers",
            stops_itself=False,
            description="the faust agent with TransactionManager.send patched so that sink "
            "writes join the input partition's transaction (real exactly-once)",
        ),
    )
}
