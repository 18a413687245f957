# Hallmark. Bare `make` lists the targets.
VENV ?= .venv
PY := $(VENV)/bin/python
# The test suite talks to real PostgreSQL and Redis on this machine (see .ci/services.sh).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/hallmark
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
# `make serve HOST=0.0.0.0 PORT=8080` (DJANGO_DEBUG must be off off loopback)
HOST ?= 127.0.0.1
PORT ?= 8000

.DEFAULT_GOAL := help
.PHONY: wrk help install browser demo serve test lint bench chaos scan evaluate

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed ## create .venv and install Hallmark (CPU torch) with its dev tools

demo: install ## the end-to-end demo on the embedded default (SQLite, bundled Redis, real workers)
	$(PY) -m registry.demo

serve: install ## run the embedded registry (web + workers + Redis) until Ctrl-C
	$(PY) manage.py serve --host $(HOST) --port $(PORT)

browser: ## Debian's chromium for the browser tests (playwright drives it; installed when missing)
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else echo "the browser tests need Debian's chromium: sudo apt-get install chromium" >&2; exit 1; fi; }

wrk: ## the HTTP load generator of the API benchmark (installed when missing)
	@command -v wrk >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; \
		else echo "the API benchmark needs wrk: sudo apt-get install wrk" >&2; exit 1; fi; }

test: install browser ## the test suite: unit, hostile corpus, integration (PostgreSQL, Redis, celery worker), browser, demo
	DATABASE_URL=$(TEST_DATABASE_URL) HALLMARK_TEST_REDIS_URL=$(TEST_REDIS_URL) \
		HALLMARK_DATA_DIR=$(CURDIR)/.test-data $(PY) -m pytest -q

lint: install ## ruff and mypy
	$(VENV)/bin/ruff check verifier registry workers tests
	$(VENV)/bin/mypy

bench: install wrk ## benchmarks (log, proofs, audit, extraction, 1 vs 2 workers drain, scan, perf ratios, Hub range reads); results go to bench/results/
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) -m bench

chaos: install ## kill workers, restart Redis and PostgreSQL under a 200-verification burst (private services)
	$(PY) -m bench.chaos

scan: install ## registry scans of 100, 1,000, 10,000 uchida commitments through one worker (private services)
	$(PY) -m bench.scan

evaluate: install ## fidelity, power, robustness and false-positive rates -> docs/quality.md
	$(VENV)/bin/hallmark evaluate --schemes uchida,trigger_set,seal,lsb,output_signature,advparams
