# Two commands on a fresh machine: `make demo` and `make test`. Both install first,
# the `local` extra included (llama-cpp-python builds from source once, ~8 minutes
# on 2 cores; pip caches the wheel).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,local]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/treesearch demo

test: $(BIN)/.installed
	$(BIN)/pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check treesearch backends tests benchmarks
	$(BIN)/mypy

$(BIN)/.bench: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

bench: $(BIN)/.bench
	$(BIN)/python benchmarks/bench_grouping.py
	$(BIN)/python benchmarks/bench_overhead.py
	$(BIN)/python benchmarks/bench_search.py --prm-noise 3
	$(BIN)/python benchmarks/bench_real.py
	$(BIN)/python benchmarks/bench_embedded.py
	$(BIN)/python benchmarks/bench_adaptive_stop.py
	$(BIN)/python benchmarks/bench_adaptive.py
