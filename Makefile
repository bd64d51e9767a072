# Two commands on a fresh machine: `make demo` and `make test`. Both install first,
# the `local` extra included (llama-cpp-python builds from source once, ~8 minutes
# on 2 cores; the wheel is kept, see LLAMA_WHEELS).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint docs bench

# llama.cpp is built for a fixed instruction set, never for the building CPU (GGML_NATIVE
# off: SSE4.2, AVX, AVX2, BMI2, FMA, F16C; no AVX-512, no AMX). A native build carries that
# CPU's kernels: on Intel CPUs with AMX its repacked Q4_K matmul crashes
# (ggml-org/llama.cpp#20824), and a wheel built with AVX-512 dies on a CPU without it. pip's
# wheel cache does not key on CMAKE_ARGS, so the wheel is built without that cache into a
# folder named for the flags, once, and installed from there before the project.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
LLAMA_WHEELS := $(HOME)/.cache/treesearch/llama-cpp-wheels/$(shell echo '$(LLAMA_CMAKE_ARGS)' | cksum | cut -d' ' -f1)

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' $(BIN)/python -m pip wheel --quiet --no-deps --no-cache-dir \
			--wheel-dir $(LLAMA_WHEELS) 'llama-cpp-python>=0.3.36'
	$(BIN)/python -m pip install --quiet $(LLAMA_WHEELS)/llama_cpp_python-*.whl
	$(BIN)/python -m pip install --quiet -e '.[dev,local,docs]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/treesearch demo

test: $(BIN)/.installed
	$(BIN)/pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check treesearch backends tests benchmarks
	$(BIN)/mypy

# The manual in docs/ (mkdocs-material; the API pages from docstrings by mkdocstrings), into
# site/. --strict turns every warning (a broken link, a docstring it cannot read) into a failure.
docs: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

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
