# The two commands of the quick start:
#   make run   — serve the broker on 127.0.0.1:8787/mcp with examples/broker.yaml (embedded defaults)
#   make test  — install everything the tests need and run the whole suite (what CI runs)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
export PATH := $(BIN):$(PATH)

.PHONY: run test install node-tools opa promtool services browser lint typecheck policy pytest bench bench-report lock clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,bench]'
	touch $@

install: $(STAMP)

run: $(STAMP)
	$(BIN)/mcp-broker serve -c examples/broker.yaml

node-tools:
	scripts/install-node-tools.sh

# The real OPA, built with `go install` at a pinned version and cached under ~/.cache.
opa:
	scripts/install-opa.sh >/dev/null

# promtool checks the alerting rules in deploy/prometheus (Debian package, cached under ~/.cache).
promtool:
	scripts/install-promtool.sh >/dev/null

# Redis and PostgreSQL servers (Debian packages) for the scale-out tests; the tests start and
# stop their own instances on 127.0.0.1.
services:
	scripts/install-services.sh
	scripts/install-postgres.sh >/dev/null

# Debian's chromium and chromium-driver for the dashboard's browser test.
browser:
	scripts/install-browser.sh

lint: $(STAMP)
	$(BIN)/ruff check broker tests examples bench
	$(BIN)/ruff format --check broker

typecheck: $(STAMP)
	$(BIN)/mypy broker

# Policies are code: validated, formatted, unit-tested (opa test) and run against the cases
# in policy-tests/ on both engines, which must agree (docs/policy-cli.md).
policy: $(STAMP) opa
	$(BIN)/mcp-broker policy check
	$(BIN)/mcp-broker policy test --engine both

pytest: $(STAMP) node-tools opa promtool services browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck policy pytest

bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The benchmark report: direct paths, the broker (Cedar, OPA) and the peer gateways installed by
# scripts/install-peers.sh (their own venvs); one table + one PNG in bench/results/.
bench-report: $(STAMP) opa
	scripts/install-peers.sh
	$(BIN)/python -m bench.report $(BENCH_ARGS)

# Refresh the pinned versions after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^mcp-authz-broker' > constraints.txt

clean:
	rm -rf $(VENV) tools/node/node_modules .pytest_cache .mypy_cache .ruff_cache
