# The two commands of the README:
#   make demo   the main job on the embedded local stack (sets everything up itself)
#   make test   lint, type-check and every test against a real broker and registry
# Everything runs from a virtual environment in .venv, created on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install deps lint typecheck unit integration test demo up down status bench chaos clean

help:
	@echo "make demo       run the main job on the local stack"
	@echo "make test       ruff + mypy + all tests (starts and stops what it needs)"
	@echo "make up/down    start/stop the local Kafka + schema registry"
	@echo "make bench      run the throughput benchmark (bench/README.md)"
	@echo "make chaos      the full-size chaos runs (worker kills, broker restarts)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# System packages the tests need (PostgreSQL server binaries), installed when missing.
deps:
	bash ops/ensure-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check streams tests bench
	$(BIN)/ruff format --check streams tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy streams tests bench

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

# pytest exits 5 when it collected no test; that fails the target like any other non-zero code.
integration: $(STAMP) deps
	$(BIN)/pytest tests/integration -q

# The broker-restart chaos run is left to `make chaos` (it takes minutes and restarts a broker).
# One broker and registry for the whole run (tests/stack.py), shared by TEST_WORKERS parallel
# pytest processes; a test module runs in one process (--dist loadfile).
TEST_WORKERS ?= 3
test: deps lint typecheck
	$(BIN)/python -m tests.stack -- $(BIN)/pytest tests -q -m "not chaos_broker" \
		-n $(TEST_WORKERS) --dist loadfile

up: $(STAMP)
	$(BIN)/streams local up

down: $(STAMP)
	$(BIN)/streams local down

status: $(STAMP)
	$(BIN)/streams local status

demo: $(STAMP)
	$(BIN)/streams local up --clear-stale
	$(BIN)/python -m streams.examples.demo $(DEMO_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The full-size chaos runs (tests/chaos/harness.py, tests/chaos/infra.py), each on a broker of
# its own: 100,000 records with 18 worker kills and 4 SIGTERM restarts; 2 broker restarts;
# 20,000 records through key-ordered stages with 8 kills (every record's per-key order checked)
# and its control (the same order check on plain retries must find violations, and only those);
# the infrastructure run (Avro in the middle, the registry cut for 2 minutes, an oversized
# record, a broker restart, the monitor watched); then the chaos_broker tests.
# Each run writes its summary to tests/chaos/results/.
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos.harness --records 100000 --rate 500 --kills 18 --sigterms 4 --label chaos-full-workers --json artifacts/chaos-full-workers.json
	$(BIN)/python -m tests.chaos.harness --records 20000 --rate 300 --kills 0 --sigterms 0 --broker-restarts 2 --label chaos-full-broker --json artifacts/chaos-full-broker.json
	$(BIN)/python -m tests.chaos.harness --records 20000 --rate 500 --kills 8 --sigterms 2 --key-ordered --label chaos-full-key-ordered --json artifacts/chaos-full-key-ordered.json
	$(BIN)/python -m tests.chaos.harness --records 4000 --rate 400 --kills 4 --sigterms 0 --check-all-order --expect-violations order --label chaos-control-order --json artifacts/chaos-control-order.json
	$(BIN)/python -m tests.chaos.infra --records 20000 --rate 200 --registry-outage-s 120 --json artifacts/chaos-full-infra.json
	$(BIN)/pytest tests/chaos -q -m chaos_broker

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
