"""The README's main job on the default embedded model: `make run` gives a real answer offline.

No endpoint and no key: `make run` serves Qwen2.5-Coder-1.5B-Instruct (joined from its parts
into a fresh data folder first) and runs the orchestrator on the Makefile's default goal. The
answer must be on topic, naming both stores it compares, and hold text as the model wrote
it: no HTML entities from an escaping chat format.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.langgraph_dev import REPO

pytestmark = pytest.mark.embedded

RUN_TIMEOUT = 2400
"""A 1.5B model on two cores: a planner, up to three workers and a synthesizer, in series."""


def test_make_run_answers_the_default_goal_on_topic(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUORUM_", "OPENAI_"))}
    env |= {"QUORUM_DATA_DIR": str(tmp_path / "data"), "LANGSMITH_TRACING": "false"}

    run = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), "run", f"PYTHON={sys.executable}"],
        env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )  # fmt: skip

    assert run.returncode == 0, run.stderr[-3000:]
    answer = run.stdout
    assert "status completed  tokens " in run.stderr
    assert "sqlite" in answer.lower() and re.search(r"postgres", answer, re.IGNORECASE), answer
    assert not re.search(r"&(#\d+|#x[0-9a-f]+|[a-z]+);", answer, re.IGNORECASE), answer
    model = tmp_path / "data" / "models" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    assert model.stat().st_size == 1_117_320_768
    model.unlink()  # pytest keeps the last runs' folders: not 1.1 GB each
