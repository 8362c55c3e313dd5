# Quorum's set-up, main job and tests. Every target installs what it needs first, from the
# committed lock (requirements.lock): a fresh machine gets exactly what CI tested.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/uv
# llama-cpp-python compiles from source: build only the text library (no examples, tests,
# tools, server binaries, multimodal library or llama.cpp's "common" helpers, which
# scripts/llama-cpp-build.cmake switches off: half the build; libllama itself at -O1), for a
# generic x86-64 CPU with AVX2 so a wheel cached by uv works on any machine like it. (A native
# build on our AVX-512 machine crashed in ggml-cpu at its first prompt, llama-cpp-python 0.3.36.)
export CMAKE_ARGS ?= -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DCMAKE_PROJECT_llama.cpp_INCLUDE=$(CURDIR)/scripts/llama-cpp-build.cmake
GOAL ?= Compare SQLite and PostgreSQL as the checkpoint store for a small team's agent service
# The fast lane leaves out what starts the embedded model, a server, PostgreSQL or the
# SIGKILL trials, opens Chromium or takes seconds (whole CLI runs in other processes): the
# unit and in-process stub-server tests, for development loops.
FAST := not embedded and not server and not postgres and not crash and not browser and not slow

.PHONY: setup uv lock upgrade run smoke lint test test-fast system-deps clean

# Installs exactly the lock, checked by hash, with no resolution: uv first (its own pin in the
# lock), then every other distribution; a lock older than pyproject.toml stops it. Compiled to
# bytecode as pip would (uv does not by default): where PYTHONDONTWRITEBYTECODE is set, as in
# many containers and CI images, every `quorum` command otherwise compiles its imports anew,
# 4.1 s instead of 1.9 s of CPU for `quorum --version` on our 2-core machine. The checkout's
# own package is installed editable, so it is compiled here and again on each `make setup`
# (a changed module's stale bytecode is not used): 0.3 s of each command's start.
$(VENV)/.installed: pyproject.toml requirements.lock
	@$(PYTHON) scripts/lock.py check
	$(MAKE) --no-print-directory uv
	$(UV) pip sync --quiet --require-hashes --compile-bytecode requirements.lock
	$(UV) pip install --quiet --no-deps -e .
	touch $@

setup: $(VENV)/.installed  ## Create .venv with Quorum, the embedded model and the dev tools.
	@$(BIN)/python -m compileall -q quorum

# The venv with uv alone, at the lock's own pin, checked by hash: what installs the lock and
# what re-resolves it (so `make lock` works while the lock is stale).
uv:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PYTHON) scripts/lock.py uv > $(VENV)/uv-requirement.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r $(VENV)/uv-requirement.txt

lock: uv  ## Re-lock after a change to pyproject.toml's dependencies (other pins stay).
	$(BIN)/python scripts/lock.py write
	$(MAKE) setup

upgrade: uv  ## Newest releases; the lock is rewritten only if test-fast and smoke pass.
	$(BIN)/python scripts/lock.py upgrade

# The main job is sized for the embedded model on a small CPU: a plan of at most 3 steps and
# one tool call a worker (each reply takes tens of seconds there). RUN_SETTINGS= lifts that.
RUN_SETTINGS ?= --set max_plan_steps=3 --set max_tool_calls=1

run: setup  ## The main job: an orchestrator run (on the embedded model unless an endpoint is set).
	$(BIN)/quorum run orchestrator "$(GOAL)" $(RUN_SETTINGS)

smoke: setup  ## One ReAct run through the CLI against the scripted server on loopback.
	$(BIN)/python scripts/smoke.py

lint: setup
	$(BIN)/ruff check quorum tests bench scripts
	$(BIN)/ruff format --check quorum tests bench scripts
	$(BIN)/mypy

# Headless Chromium opens the run report in its test (graphviz-pure, from the lock, draws the
# graphs). Installed here on Debian or Ubuntu; elsewhere named, and the tests stop.
system-deps:
	@scripts/system-deps.sh

# One worker more than the cores (pytest-xdist): many tests wait on the processes and servers
# they start, so a third worker on 2 cores keeps them busy (the fast lane: 110 s on 3 workers,
# 141 s on 2, side by side). tests/conftest.py hands out whole modules, the ones that keep an
# embedded model answering as one unit. JOBS=0 runs the suite in this process, in order.
JOBS ?= $(shell $(PYTHON) -c "import os; print((os.cpu_count() or 1) + 1)")
XDIST = $(if $(filter 0,$(JOBS)),,-n $(JOBS))

# The 30 slowest tests are listed at the end: where the suite's time goes, on every CI run.
test: system-deps lint  ## Lint, type-check and run the whole test suite.
	$(BIN)/python -m pytest $(XDIST) --durations=30

test-fast: lint  ## The fast lane: no embedded model, servers, PostgreSQL, crash trials or slow tests.
	$(BIN)/python -m pytest $(XDIST) -m "$(FAST)"

# Threads live in the per-user data folder (QUORUM_DATA_DIR), never in the checkout: clean
# leaves them alone (`quorum threads --prune` deletes old ones).
clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .langgraph_api
