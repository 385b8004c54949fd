# exe-collab: see README.md. `make run` and `make test` are the two commands that matter.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
NODE_STAMP := tests/node/node_modules/.installed

.PHONY: help venv node system-deps run test migrate clean

help:
	@echo "make run      serve gateway + collab on http://127.0.0.1:8080 (SQLite under ./data)"
	@echo "make test     install what is missing, then run the whole test suite"
	@echo "make migrate  alembic upgrade head against the configured database"

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

system-deps:
	@bash scripts/install-system-deps.sh

run: venv
	$(PY) -m services

test: venv node system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

migrate: venv
	$(PY) -m alembic upgrade head

clean:
	rm -rf $(VENV) tests/node/node_modules .pytest_cache
