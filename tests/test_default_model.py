"""The default embedded model gives real answers offline, through the command line.

No endpoint and no key. First, the README's main job as a new user runs it: `make run` joins
Qwen2.5-Coder-1.5B-Instruct from its parts into a fresh data folder, serves it and runs the
orchestrator on the Makefile's default goal. Then ReAct runs on the same model through
`quorum run`, on a server `quorum model serve` keeps up for it. Each answer must be on topic
and hold text as the model wrote it: no HTML entities from an escaping chat format.

Debate and the pipeline are judged on this model outside the suite, where their time goes
further: `quorum eval` runs debate on 30 questions a set (the README's table), and
`python -m bench conformance` measures every structured reply they need. One debate on this
model took 15 min of the suite's time (nearly half of it) for one on-topic check; their runs
end to end are in tests/test_e2e_embedded.py, on the small model.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from quorum.settings import Settings
from quorum.testing.langgraph_dev import REPO
from quorum.testing.stub import isolated_environ
from tests.model_serve import model_served

pytestmark = pytest.mark.embedded

RUN_TIMEOUT = 3000
"""A 1.5B model on two cores: a planner, up to three workers and a synthesizer, in series.
About 5 min on an idle machine; beside the suite's other worker it has taken 27 min, and
once over 40 (ci-local with other work on the machine), so the bound is well above."""
ENTITY = re.compile(r"&(#\d+|#x[0-9a-f]+|[a-z]+);", re.IGNORECASE)
MODEL_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
RECOMMENDS = re.compile(r"\brecommend|\bchoose\b|\bgo with\b|\bbetter (choice|fit|option)", re.I)

# What each pattern is asked through `quorum run`, its run settings, and words its answer names.
CASES = {
    "react": ("What is 17 times 23? Use the calculator.", {"max_steps": 4}, [r"\b391\b"]),
}


def chosen(answer: str, options: list[str]) -> str | None:
    """The one option the answer's recommendation names, or None when it names none or both.

    "Consider comparing SQLite and PostgreSQL based on your needs" (the main job's opening
    before its synthesizer was asked after the results) recommends nothing.
    """
    found = RECOMMENDS.search(answer)
    if found is None:
        return None
    sentence = re.split(r"(?<=[.!?])\s|\n", answer[found.start() :], maxsplit=1)[0]
    named = [o for o in options if o in sentence.split("because")[0].lower()]
    return named[0] if len(named) == 1 else None


def _env(data: Path) -> dict[str, str]:
    env = isolated_environ()
    return env | {"QUORUM_DATA_DIR": str(data), "LANGSMITH_TRACING": "false"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One data folder for the module; the 1.1 GB model joined into it goes with the module."""
    folder = tmp_path_factory.mktemp("default-model")
    yield folder
    (folder / "models" / MODEL_FILE).unlink(missing_ok=True)  # pytest keeps old folders


@pytest.fixture(scope="module")
def served(data: Path) -> Iterator[Path]:
    """`quorum model serve` on the default model, for the module's `quorum run` calls."""
    with model_served(data, _env(data), Settings(data_dir=data)):
        yield data


def test_make_run_answers_the_default_goal_on_topic(data: Path) -> None:
    run = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), "run", f"PYTHON={sys.executable}"],
        env=_env(data), capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )  # fmt: skip

    assert run.returncode == 0, run.stderr[-3000:]
    answer = run.stdout
    assert "status completed  tokens " in run.stderr
    assert "sqlite" in answer.lower() and re.search(r"postgres", answer, re.IGNORECASE), answer
    assert not ENTITY.search(answer), answer
    # An answer worth reading: it recommends one of the two, and says each thing once.
    assert chosen(answer, ["sqlite", "postgres"]) is not None, answer
    paragraphs = [" ".join(p.split()).lower() for p in re.split(r"\n\s*\n", answer) if p.strip()]
    assert len(paragraphs) == len(set(paragraphs)), answer
    assert (data / "models" / MODEL_FILE).stat().st_size == 1_117_320_768


@pytest.mark.parametrize("pattern", list(CASES))
def test_each_pattern_answers_on_the_default_model(served: Path, pattern: str) -> None:
    question, context, names = CASES[pattern]
    settings = [f"--set={key}={value}" for key, value in context.items()]
    thread = f"default-{pattern}"

    run = subprocess.run(
        [sys.executable, "-m", "quorum.cli", "run", pattern, question, "--thread", thread,
         *settings],
        env=_env(served), cwd=served, capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )  # fmt: skip

    assert run.returncode == 0, run.stderr[-3000:]
    assert f"thread {thread}  status completed  tokens " in run.stderr
    answer = run.stdout
    for name in names:
        assert re.search(name, answer, re.IGNORECASE), answer
    assert not ENTITY.search(answer), answer
