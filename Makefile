# tomograph's developer commands. `make test` works on a fresh machine: it creates the
# virtualenv, installs the test extras and the real servers the system tests talk to.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo bench fuzz lint typecheck deps system-deps format clean

# setup.py and the C source: a changed accelerator is rebuilt by the next `make deps`.
$(STAMP): pyproject.toml setup.py src/tomograph/_speedups.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

deps: $(STAMP)

system-deps:
	bash scripts/install-system-deps.sh

lint: deps
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: deps
	$(BIN)/mypy

# The whole suite twice: on the compiled span hot path (tests/test_accelerator.py fails under
# CI if it was not built), then on the pure-Python one every install without a compiler runs.
test: deps system-deps lint typecheck
	$(BIN)/python -m pytest
	TOMOGRAPH_NO_EXTENSIONS=1 $(BIN)/python -m pytest

format: deps
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

demo: deps
	$(BIN)/tomograph demo

bench: deps
	$(BIN)/python benchmarks/run.py

# 20,000 mutated requests per collector route (the normal suite sends a few hundred)
fuzz: deps
	TOMOGRAPH_FUZZ_BODIES=20000 $(BIN)/python -m pytest tests/collector/test_fuzz.py -q -s

clean:
	rm -rf $(VENV) .deps .pytest_cache .mypy_cache .ruff_cache test-artifacts
