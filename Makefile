# The two commands of the README. Both install what they need first (a venv in .venv).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/vaxbot: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

## Start vaxbot: SQLite under var/, development keys in keys/, demo data, at http://127.0.0.1:8080
run: $(BIN)/vaxbot
	VAXBOT_LOG_FORMAT=$${VAXBOT_LOG_FORMAT:-text} $(BIN)/vaxbot serve

## Lint, type-check and run the whole test suite on SQLite and on a throwaway PostgreSQL
test: $(BIN)/vaxbot
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	eval "$$(scripts/pg-test-cluster start)" && VAXBOT_REQUIRE_POSTGRES=1 $(BIN)/pytest

lint: $(BIN)/vaxbot
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy && $(BIN)/lint-imports

## Print throughput and latency figures (see bench/README.md)
bench: $(BIN)/vaxbot
	$(BIN)/python bench/wechat_bench.py

clean:
	-scripts/pg-test-cluster stop
	rm -rf var
