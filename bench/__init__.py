"""Benchmark harness: exactly-once copy stages compared with baselines and peer frameworks.

Run it with ``python -m bench.run``; see ``bench/README.md``. Nothing here is imported by
``streams`` and nothing here is shipped: the package exists only so that the harness and the
contender processes (which may run under ``.bench-venv``) share the workload and spec code.
"""
