# Vigil: the two commands are `make run` and `make test`; everything else is a step of theirs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: setup browser run test bench lint typecheck unit kafka-fetch kafka-start kafka-stop kafka-status topics schemas clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Vigil needs Python >= 3.11, found " + sys.version' 
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

setup: $(STAMP) kafka-fetch

## The system on its embedded default: local Kafka, simulated ICU, alerts printed (Ctrl-C stops all).
run: setup
	$(BIN)/vigil run

## Debian's chromium for the Playwright browser tests (no browser download).
browser:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

## Lint, type-check, unit and integration tests against a real broker the test session starts and stops.
test: setup browser lint typecheck
	$(BIN)/pytest

## All benchmarks against a local broker (~15-20 min on 2 cores): bench/results/summary-<time>.md.
## Sizes and choice: make bench BENCH_ARGS="--only replay --replay-patients 0"
bench: setup
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -m 'not kafka'

kafka-fetch: $(STAMP)
	$(BIN)/vigil kafka fetch

kafka-start: setup
	$(BIN)/vigil kafka start

kafka-stop: $(STAMP)
	$(BIN)/vigil kafka stop

kafka-status: $(STAMP)
	$(BIN)/vigil kafka status

topics: $(STAMP)
	$(BIN)/vigil topics create

schemas: $(STAMP)
	$(BIN)/vigil schemas export schemas/json

clean:
	rm -rf $(VENV) .run .mypy_cache .ruff_cache .pytest_cache
