# mailgate — `make run` serves, `make test` tests; both install what they need first.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
export UV_LINK_MODE ?= copy

.PHONY: install run test test-sqlite test-postgres lint format bench bench-smoke

install: .venv/.installed

.venv/.installed: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen
	@touch $@

run: install
	$(UV) run --frozen mailgate serve

# The whole suite on SQLite, then again on PostgreSQL (a database created and dropped per run).
test: install test-sqlite test-postgres

test-sqlite: install
	MAILGATE_TEST_DB=sqlite $(UV) run --frozen pytest $(PYTEST_ARGS)

test-postgres: install
	MAILGATE_TEST_DB=postgres $(UV) run --frozen pytest $(PYTEST_ARGS)

lint: install
	$(UV) run --frozen ruff check src tests
	$(UV) run --frozen ruff format --check src tests
	$(UV) run --frozen mypy

format: install
	$(UV) run --frozen ruff format src tests
	$(UV) run --frozen ruff check --fix src tests
