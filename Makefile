# SBT developer commands. `make run` and `make test` work on a fresh machine with Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
# Two workers: most test time waits on databases and server processes, so 2 cores fit 2 workers.
PYTEST_ARGS ?= -n 2

.PHONY: run test test-slow test-all lint openapi bench bench-scale bench-scaleout clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.run-installed: $(BIN)/python pyproject.toml setup.py constraints.txt app/audit/_rowhash.c
	$(BIN)/pip install --quiet -c constraints.txt -e .
	touch $@

$(VENV)/.test-installed: $(BIN)/python pyproject.toml setup.py constraints.txt app/audit/_rowhash.c
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@ $(VENV)/.run-installed

run: $(VENV)/.run-installed
	$(BIN)/sbt db upgrade
	$(BIN)/sbt keys generate
	@$(BIN)/sbt bootstrap
	$(BIN)/sbt serve --port $(PORT)

test: $(VENV)/.test-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: $(VENV)/.test-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS) -m slow

test-all: $(VENV)/.test-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS) -m ''

lint: $(VENV)/.test-installed
	$(BIN)/ruff check app tests scripts migrations
	$(BIN)/mypy app tests scripts

openapi: $(VENV)/.test-installed
	$(BIN)/python scripts/export_openapi.py

# SPEC §11 throughput/latency (2 cores, a few minutes; installs wrk if missing). BENCH_ARGS e.g. "--rounds 1".
bench: $(VENV)/.run-installed
	BENCH_COMMAND="make bench$(if $(BENCH_ARGS), BENCH_ARGS='$(BENCH_ARGS)')" \
		$(BIN)/python scripts/bench/run.py $(BENCH_ARGS)

# SPEC §11 scale: 10M audit events per backend (long; needs tens of GB of disk). SCALE_ARGS e.g. "--events 200000".
bench-scale: $(VENV)/.run-installed
	BENCH_COMMAND="make bench-scale$(if $(SCALE_ARGS), SCALE_ARGS='$(SCALE_ARGS)')" \
		$(BIN)/python scripts/bench/scale.py $(SCALE_ARGS)

# 1 and 2 uvicorn workers on one PostgreSQL with rate limits in Redis (docs/operations.md, scale-out).
bench-scaleout: $(VENV)/.run-installed
	BENCH_COMMAND="make bench-scaleout" $(BIN)/python scripts/bench/scaleout.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
