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

# The whole suite on SQLite, then again on PostgreSQL (a database created and dropped per
# run), then the benchmark harness with tiny sizes so it never rots.
test: install bench-smoke test-sqlite test-postgres

test-sqlite: install
	MAILGATE_TEST_DB=sqlite $(UV) run --frozen pytest $(PYTEST_ARGS)

test-postgres: install
	MAILGATE_TEST_DB=postgres $(UV) run --frozen pytest $(PYTEST_ARGS)

lint: install
	$(UV) run --frozen ruff check src tests bench
	$(UV) run --frozen ruff format --check src tests bench
	$(UV) run --frozen mypy

format: install
	$(UV) run --frozen ruff format src tests bench
	$(UV) run --frozen ruff check --fix src tests bench

# Benchmarks (docs/performance.md). `bench` installs wrk and postfix's smtp-sink/smtp-source
# when missing (postfix with "No configuration", so no daemon listens on port 25) and runs
# every scenario, bounded to 10 minutes; results in bench/results/<UTC timestamp>.{json,md}.
# `bench-smoke` runs the same code with tiny sizes in under a minute, with or without those
# tools; it fails only when the harness itself breaks, not on missed targets.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

bench: install
	@if ! command -v wrk >/dev/null 2>&1 || [ ! -x /usr/sbin/smtp-sink ]; then \
	  echo "postfix postfix/main_mailer_type select No configuration" | $(SUDO) debconf-set-selections; \
	  $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y wrk postfix; \
	  if $(SUDO) postfix status >/dev/null 2>&1; then $(SUDO) postfix stop; fi; \
	fi
	$(UV) run --frozen python -m bench.run $(BENCH_ARGS)

bench-smoke: install
	$(UV) run --frozen python -m bench.run --smoke $(BENCH_ARGS)
