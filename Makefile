# Portico: `make run` starts the suite on embedded defaults, `make test` runs every check.
# Both create the virtual environment and install everything (Python and npm) on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: install run test lint typecheck unit protos bench bench-report soak clean

$(STAMP): pyproject.toml package.json package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# `npm install` rather than `npm ci`: npm 11 leaves buf's other-platform optional packages out of the
	# lock file, which `npm ci` then rejects; the versions are still pinned by package.json and the lock.
	npm install --no-audit --no-fund --loglevel=error
	touch $(STAMP)

install: $(STAMP)

## Start OpenBao (dev), the services and a demo account; Ctrl-C stops everything.
run: install
	$(BIN)/portico up $(ARGS)

## Lint, type-check and run the whole test suite (CI runs exactly this).
test: install lint typecheck unit

lint: install
	$(BIN)/ruff check services tests scripts

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest

## Regenerate services/portico/*/v1 from proto/ (commit the result).
protos: install
	$(BIN)/python scripts/gen_protos.py
	./node_modules/.bin/buf lint

## Benchmarks (on demand; figures go to bench-results/, then one report: report.json and REPORT.md).
bench: install
	$(BIN)/python -m tests.bench.bench_signer --out bench-results/signer.json
	$(BIN)/python -m tests.bench.bench_syndr_parse --out bench-results/syndr_parse.json
	$(BIN)/python -m tests.bench.bench_sim_engine --out bench-results/sim_engine.json
	$(BIN)/python -m tests.bench.bench_refdata --out bench-results/refdata.json
	$(BIN)/python -m tests.bench.bench_marketdata --out bench-results/marketdata.json
	$(BIN)/python -m tests.bench.bench_execution --out bench-results/execution.json
	$(BIN)/python -m tests.bench.bench_http1 --out bench-results/http1.json
	$(BIN)/python -m tests.bench.bench_grpc_core --out bench-results/grpc_core.json
	$(BIN)/python -m tests.bench.bench_transport_floor --out bench-results/transport_floor.json
	$(BIN)/python -m tests.bench.report

## The report alone, from the JSON files already in bench-results/.
bench-report: install
	$(BIN)/python -m tests.bench.report

## Soak run (on demand, bounded): the suite under load and faults for MINUTES, figures to bench-results/soak.json.
MINUTES ?= 5
soak: install
	$(BIN)/python -m tests.soak.soak --minutes $(MINUTES) --out bench-results/soak.json

clean:
	rm -rf $(VENV) node_modules var .mypy_cache .ruff_cache .pytest_cache
