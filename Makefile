# The two set-up commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SERVICES := scripts/services
# Connection settings of the local services, exported for the step that needs them.
WITH_SERVICES = set -a && eval "$$($(SERVICES) env)" && set +a &&

.PHONY: run test check lint typecheck pytest services services-down status venv demo clean bench bench-content bench-list bench-pitr

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

# The console's browser assets (htmx), pinned by package-lock.json and served by the app.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

venv: node_modules/.installed

services:
	$(SERVICES) up

services-down:
	$(SERVICES) down

status:
	$(SERVICES) status

.env:
	cp .env.example .env

demo: venv services
	$(WITH_SERVICES) $(BIN)/python scripts/demo_data.py

run: venv services .env demo
	$(BIN)/backvault serve

lint: venv
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy

pytest: venv services
	$(WITH_SERVICES) $(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# BENCH_GB=0.25 make bench for a quick run; results land in bench/results/.
bench: venv services
	$(WITH_SERVICES) $(BIN)/python -m bench.run

# IPFS content: verified items/s (1,000 x 4 KiB) and MB/s (one 200 MB file).
bench-content: venv services
	$(WITH_SERVICES) $(BIN)/python -m bench.content

# Catalog lists under load: 200 concurrent pages on 10,000 backups and 100,000 jobs,
# /healthz polled alongside; results land in bench/results/list_load.*.
bench-list: venv services
	$(WITH_SERVICES) $(BIN)/python -m bench.list_load

# PITR on a throwaway cluster of its own: RPO with the primary killed, pgbench tps without
# and with archiving, restore to a time beside pgBackRest (installed from Debian here)
# restoring the same primary to the same time (bench/pitr.py; sizes by PITR_BENCH_*).
bench-pitr: venv services
	scripts/services bench-tools
	$(WITH_SERVICES) $(BIN)/python -m bench.pitr

clean:
	rm -rf $(VENV) node_modules .mypy_cache .pytest_cache .ruff_cache
