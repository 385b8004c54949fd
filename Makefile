# exe-collab: see README.md. `make run` and `make test` are the two commands that matter.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
NODE_STAMP := tests/node/node_modules/.installed

.PHONY: help venv node system-deps run test test-fast lint migrate clean web web-if-possible

help:
	@echo "make run      serve gateway + collab on http://127.0.0.1:8080 (SQLite under ./data)"
	@echo "make test     install what is missing, lint, then run the whole test suite"
	@echo "make test-fast  the unit tier only (no servers, no system packages; a few seconds)"
	@echo "make lint     ruff and mypy over services/ shared/ stack/ bench/ tests/"
	@echo "make web      build the browser client (web/ -> web/dist, served at /; needs Node.js + npm)"
	@echo "make migrate  alembic upgrade head against the configured database"
	@echo "make bench    the benchmark suite (~13 min): Markdown table on stdout, JSON in bench/results/"
	@echo "make up | down | logs [service=] | ps          the Docker Compose HA stack (deploy/)"
	@echo "make scale collab=N gateway=M                  resize the Compose stack"
	@echo "make stack [collab=N gateway=M redis=cluster] | stack-down   the same topology from local processes"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

$(NODE_STAMP): tests/node/package-lock.json
	@if command -v npm >/dev/null; then cd tests/node && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: the tests with real Yjs clients need Node.js 20 and npm" >&2; exit 1; fi

node: $(NODE_STAMP)

# The browser client (web/): its npm packages, then the esbuild bundle in web/dist (not committed),
# rebuilt when web/src, web/build.mjs or web/package-lock.json is newer.
WEB_STAMP := web/node_modules/.installed
WEB_BUNDLE := web/dist/index.html

$(WEB_STAMP): web/package-lock.json
	@if command -v npm >/dev/null; then cd web && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: building the browser client (web/) needs Node.js 20+ and npm" >&2; exit 1; fi

$(WEB_BUNDLE): $(WEB_STAMP) web/build.mjs $(shell find web/src 2>/dev/null)
	cd web && node build.mjs

web: $(WEB_BUNDLE)

# `make run` without Node still serves the API (and / says how to get the UI).
web-if-possible:
	@if command -v npm >/dev/null && command -v node >/dev/null; then \
		$(MAKE) --no-print-directory web || echo "building the browser client failed: serving the API only" >&2; \
	else echo "Node.js/npm not found: serving the API only. For the browser client at /, install Node.js 20+ and npm, then run 'make web'." >&2; fi

system-deps:
	@bash scripts/install-system-deps.sh

run: venv web-if-possible
	$(PY) -m services

LINT_PATHS := services shared stack bench migrations tests
MYPY_PATHS := services shared stack bench tests

lint: venv
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m mypy $(MYPY_PATHS)

# Tiers (pyproject.toml markers, tests/conftest.py): unit | integration | browser | bench.
test-fast: venv
	$(PY) -m pytest -m unit -q $(PYTEST_ARGS)

test: venv lint node system-deps web
	$(PY) -m pytest $(PYTEST_ARGS)

migrate: venv
	$(PY) -m alembic upgrade head

clean:
	rm -rf $(VENV) tests/node/node_modules .pytest_cache web/node_modules web/dist

# ---- HA deployment (deploy/): Docker Compose, and the same topology on loopback ----
COMPOSE ?= docker compose
COMPOSE_FILE ?= deploy/docker-compose.yml
COMPOSE_ENV ?= deploy/.env
DC = $(COMPOSE) -f $(COMPOSE_FILE) --env-file $(COMPOSE_ENV)
STACK_DIR ?= run/stack

.PHONY: up down logs ps scale stack stack-down stack-status compose-env

compose-env:
	@sh deploy/check-env.sh $(COMPOSE_ENV)

up: compose-env
	$(DC) up -d --build --wait --remove-orphans

down: compose-env
	$(DC) down

logs: compose-env
	$(DC) logs -f --tail=200 $(service)

ps: compose-env
	$(DC) ps

# make scale collab=N gateway=M (either or both); nginx follows within 10 s.
scale: compose-env
	@if [ -z "$(collab)$(gateway)" ]; then echo "usage: make scale collab=N gateway=M (either or both)" >&2; exit 2; fi
	$(DC) up -d --no-deps --no-recreate --wait \
		$(if $(collab),--scale collab=$(collab)) $(if $(gateway),--scale gateway=$(gateway)) \
		$(if $(collab),collab) $(if $(gateway),gateway)

# make stack [collab=N] [gateway=M] [redis=cluster]: nginx, redis (or a 3+3 Redis Cluster),
# postgres, N gateways, N collabs, the worker.
stack: venv system-deps
	$(PY) -m stack up --collab $(or $(collab),2) --gateway $(or $(gateway),2) --redis $(or $(redis),single) --run-dir $(STACK_DIR)

stack-down:
	$(PY) -m stack down --run-dir $(STACK_DIR)

stack-status:
	$(PY) -m stack status --run-dir $(STACK_DIR)

# ---- benchmarks (bench/): the project side by side with the official Node y-websocket server ----
BENCH_NODE_STAMP := bench/node/node_modules/.installed

.PHONY: bench

$(BENCH_NODE_STAMP): bench/node/package-lock.json
	@if command -v npm >/dev/null; then cd bench/node && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: the bench's reference target needs Node.js 20 and npm" >&2; exit 1; fi

# make bench [BENCH_ARGS="--targets single,node --scenarios a,c --scale 0.2"]
bench: venv system-deps $(BENCH_NODE_STAMP)
	$(PY) -m bench $(BENCH_ARGS)
