# The two commands of the README. Both install what they need first (a venv in .venv):
# `make run` only what serving needs, `make test` adds the test and lint tools on top.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# --no-compile: pip would byte-compile every module it installs (36,000 in alipay-sdk-python alone, most of
# the install's time and half its size); Python compiles the few we import on first use instead.
PIP := $(BIN)/pip install --disable-pip-version-check --no-compile
SERVE_STAMP := $(VENV)/.installed-serve
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test lint bench clean

$(BIN)/python:
	@echo "==> creating a virtual environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)

$(SERVE_STAMP): pyproject.toml | $(BIN)/python
	@echo "==> installing vaxbot and what it needs to serve (pip install -e .)"
	$(PIP) -e .
	@touch $@

$(DEV_STAMP): $(SERVE_STAMP) pyproject.toml
	@echo "==> adding the test and lint tools (pip install -e '.[dev]')"
	$(PIP) -e '.[dev]'
	@touch $@

## Start vaxbot in development: SQLite under var/, development keys in keys/, demo data, the sandbox and the
## platforms' fakes, at http://127.0.0.1:8080. Development is always explicit: an unset VAXBOT_ENV gets
## production's rules, so this target names it.
run: $(SERVE_STAMP)
	@echo "==> starting vaxbot in development (keys, database, demo data, then the server)"
	VAXBOT_ENV=development VAXBOT_LOG_FORMAT=$${VAXBOT_LOG_FORMAT:-text} $(BIN)/vaxbot serve

## Lint, type-check and run the whole test suite on SQLite and on a throwaway PostgreSQL
test: $(DEV_STAMP)
	@echo "==> lint, format, types and layering"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	@echo "==> starting a throwaway PostgreSQL for the tests (scripts/pg-test-cluster)"
	@env_line="$$(scripts/pg-test-cluster start)" || { \
	  echo "make test: the test PostgreSQL did not start (the reason is above); no tests were run" >&2; exit 1; }; \
	eval "$$env_line"; \
	echo "==> the test suite on SQLite and on PostgreSQL ($$VAXBOT_TEST_POSTGRES_URL)"; \
	VAXBOT_REQUIRE_POSTGRES=1 $(BIN)/pytest

lint: $(DEV_STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy && $(BIN)/lint-imports

## Print throughput and latency figures (see bench/README.md)
bench: $(DEV_STAMP)
	$(BIN)/python bench/wechat_bench.py

clean:
	-scripts/pg-test-cluster stop
	rm -rf var
