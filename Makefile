# Two commands matter: `make demo` (the main job) and `make test`. Both build .venv on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# Tests run in parallel processes: most of the suite waits on sockets, subprocesses and Retry-After
# sleeps, not on the CPU, so four workers on two cores cut the wall time; each test has its own
# database schema, ESM_HOME and emulator ports. PYTEST_WORKERS=0 runs them in one process.
PYTEST_WORKERS ?= 5
UI_PORT ?= 3000
# `make prod-check` creates (and drops) a scratch database on this server.
PROD_CHECK_URL ?= postgresql+psycopg2://postgres@127.0.0.1:5432/test

.PHONY: install demo test test-fast lint format bench ui clean-demo prod-check celery-worker celery-check

$(STAMP): pyproject.toml
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "esm_dagster needs Python 3.11+; set PY=python3.11")'
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
	$(BIN)/python -c 'import esm_dagster, dagster, pytest'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/esm demo

test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile -rs $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check esm_dagster esm_dagster_tests benchmarks deploy
	$(BIN)/ruff format --check esm_dagster esm_dagster_tests benchmarks deploy
	$(BIN)/mypy esm_dagster

format: $(STAMP)
	$(BIN)/ruff check --fix esm_dagster esm_dagster_tests benchmarks deploy
	$(BIN)/ruff format esm_dagster esm_dagster_tests benchmarks deploy

# The figures of issue 8 (benchmarks/report.py), written to benchmarks/results/bench.{md,json}.
# Installs the `bench` extra (dlt) first; never part of `make test`. BENCH_ARGS picks sizes.
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]' 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
	$(BIN)/python -m benchmarks.report $(BENCH_ARGS)

ui: $(STAMP)
	$(BIN)/esm ui --ui-port $(UI_PORT)

clean-demo:
	rm -rf .esm

# The production profile (deploy/dagster.prod.yaml) on a real PostgreSQL: queue, daemon, run, read-back.
# The URL goes through the environment (a command line shows in `ps`); it is printed masked.
prod-check: export ESM_PROD_CHECK_URL := $(PROD_CHECK_URL)
prod-check: $(STAMP)
	@exec $(BIN)/python -m deploy.prod_check

# One Celery worker for `deploy.celery_defs` (needs DAGSTER_HOME on the PostgreSQL profile and the
# code location's environment): CELERY_QUEUE, CELERY_CONCURRENCY.
# dagster-celery starts `celery` by name, so the venv's bin goes first on PATH.
CELERY_QUEUE ?= dagster
CELERY_CONCURRENCY ?= 2
# Broker and backend reach the processes through the environment, not their command lines
# (`ps` shows those, and the broker URL holds a password). Stop a worker with Ctrl-C.
ESM_CELERY_BROKER ?= pyamqp://guest:guest@127.0.0.1:5672//
ESM_CELERY_BACKEND ?= rpc://
celery-worker celery-check: export ESM_CELERY_BROKER := $(ESM_CELERY_BROKER)
celery-worker celery-check: export ESM_CELERY_BACKEND := $(ESM_CELERY_BACKEND)
celery-worker: $(STAMP)
	@echo "celery worker on queue $(CELERY_QUEUE), concurrency $(CELERY_CONCURRENCY) (broker from ESM_CELERY_BROKER)"
	@PATH="$(abspath $(BIN)):$$PATH" PYTHONPATH=$(CURDIR) ESM_CELERY_QUEUE=$(CELERY_QUEUE) \
		exec $(BIN)/dagster-celery worker start -A dagster_celery.app \
		-y deploy/celery.yaml -q $(CELERY_QUEUE) -- -c $(CELERY_CONCURRENCY)

# Before a Celery run: the broker takes the credentials and a worker consumes the queue (a run
# waits without a word when either is wrong). Exit 2 with one line naming which.
celery-check: $(STAMP)
	@PYTHONPATH=$(CURDIR) ESM_CELERY_QUEUE=$(CELERY_QUEUE) exec $(BIN)/python -m deploy.celery_check
