"""End to end on the embedded model: every pattern through Python, and the CLI and HTTP too.

One `quorum model serve` (llama-cpp-python serving SmolLM2-135M-Instruct on loopback) runs
for the module; every run below finds and reuses it, as a user's runs would. The model is
small, so the assertions are about the system: runs complete, structured outputs validate,
usage is recorded per agent, threads are in the checkpoint store and `quorum show` prints
them; the ReAct agent calls a tool through the JSON-action path.

Every pattern runs through Python, where its structured outputs are checked by type; the
command line and `langgraph dev` each run two patterns on this model. A door does the same
for every pattern (each runs through every door against the scripted server, in
tests/cli and tests/test_server.py), and this module is on the suite's longest path: the
full product of patterns and doors took 9 of its 29 minutes.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langgraph_sdk import get_client
from typer.testing import CliRunner

import quorum
from quorum import models
from quorum.cli import EXIT_CODES, app
from quorum.context import QuorumContext
from quorum.evals.conformance import cases, conformance
from quorum.settings import Settings, get_settings
from quorum.state import FactCheck, Plan, ResearchNotes, Summary, Verdict
from quorum.testing.langgraph_dev import langgraph_dev
from quorum.testing.stub import isolated_environ
from tests.model_serve import model_served

pytestmark = pytest.mark.embedded

# Small limits keep each run to a handful of model calls on two CPU cores.
CONTEXTS = {
    "orchestrator": {"max_plan_steps": 3, "max_tool_calls": 1, "max_plan_repairs": 3},
    "pipeline": {"max_revisions": 1, "max_tool_calls": 1},
    "debate": {"max_rounds": 1},
    "react": {"max_steps": 3},
}
INPUTS = {
    "orchestrator": "Compare tea and coffee for a morning routine",
    "pipeline": "Green tea",
    "debate": "Is tea better than coffee in the morning?",
    "react": "What is 6 times 7? Use the calculator.",
}
# How each run may end on the small model. A 135M model may call the calculator until ReAct's
# step limit stops it: that is the loop working (tests/test_default_model.py checks answers).
ENDS = {pattern: ("completed",) for pattern in CONTEXTS} | {"react": ("completed", "step_limit")}
# The small model keeps this module fast; tests/test_default_model.py runs the default one.
# Its replies are capped shorter than the default: a 135M model writes to the cap, and these
# tests check the system, not the prose.
SMALL = {"QUORUM_EMBEDDED_MODEL": "smollm2-135m", "QUORUM_EMBEDDED_MAX_OUTPUT_TOKENS": "384"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data folder with `quorum model serve` running on it for the whole module."""
    folder = tmp_path_factory.mktemp("embedded")
    env = isolated_environ()
    env |= {"QUORUM_DATA_DIR": str(folder), "LANGSMITH_TRACING": "false", **SMALL}
    settings = Settings(data_dir=folder, embedded_model="smollm2-135m")
    with model_served(folder, env, settings):
        yield folder


@pytest.fixture
def on_embedded(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QUORUM_DATA_DIR", str(data_dir))
    for name, value in SMALL.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return data_dir


def assert_system_worked(pattern: str, values: dict) -> None:
    assert values["output"].strip()
    usage = values["usage"]
    assert usage and all(u["calls"] >= 1 for u in usage.values())
    assert all(u["input_tokens"] > 0 and u["output_tokens"] > 0 for u in usage.values())
    if pattern == "orchestrator":
        assert isinstance(values["plan"], Plan)
        assert set(values["results"]) == {step.id for step in values["plan"].steps}
    if pattern == "pipeline":
        assert isinstance(values["notes"], ResearchNotes)
        assert isinstance(values["summary"], Summary)
        assert isinstance(values["fact_check"], FactCheck)
    if pattern == "debate":
        verdict = values["verdict"]
        assert isinstance(verdict, Verdict) and 0 <= verdict.confidence <= 1
    if pattern == "react":
        assert values["status"] in ("answered", "step_limit")
        # The tool ran through the grammar-constrained JSON-action path.
        assert any(isinstance(m, ToolMessage) for m in values["messages"])


@pytest.mark.parametrize("pattern", list(CONTEXTS))
async def test_python_api(on_embedded: Path, pattern: str) -> None:
    thread = await quorum.run(
        pattern, INPUTS[pattern], context=QuorumContext.from_dict(CONTEXTS[pattern])
    )

    assert thread.status in ENDS[pattern]
    assert_system_worked(pattern, thread.values)
    # The CLI runs its own event loop, so it gets a thread of its own here.
    shown = await asyncio.to_thread(CliRunner().invoke, app, ["show", thread.thread_id])
    assert shown.exit_code == 0
    assert f"{pattern} thread {thread.thread_id}: {thread.status}" in shown.stdout


@pytest.mark.parametrize("pattern", ["debate", "react"])
def test_command_line(data_dir: Path, pattern: str) -> None:
    env = isolated_environ()
    env |= {"QUORUM_DATA_DIR": str(data_dir), "LANGSMITH_TRACING": "false", **SMALL}
    settings = [f"--set={key}={value}" for key, value in CONTEXTS[pattern].items()]
    thread = f"cli-{pattern}"

    run = subprocess.run(
        [sys.executable, "-m", "quorum.cli", "run", pattern, INPUTS[pattern], "--thread", thread,
         *settings],
        env=env, cwd=data_dir, capture_output=True, text=True, timeout=600,
    )  # fmt: skip

    status = next((end for end in ENDS[pattern] if f"status {end}  tokens " in run.stderr), None)
    assert status is not None, run.stderr
    assert run.returncode == EXIT_CODES[status], run.stderr
    assert run.stdout.strip()
    assert f"thread {thread}  status {status}  tokens " in run.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "quorum.cli", "show", thread],
        env=env, cwd=data_dir, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0 and f"{pattern} thread {thread}: {status}" in shown.stdout


OVER_HTTP = ("pipeline", "react")


async def test_over_http(data_dir: Path, tmp_path: Path) -> None:
    with langgraph_dev(tmp_path, {"QUORUM_DATA_DIR": str(data_dir), **SMALL}) as served:
        async with get_client(url=served.url, api_key=None, timeout=600) as client:
            for pattern in OVER_HTTP:
                context = CONTEXTS[pattern]
                thread = await client.threads.create()
                values = await client.runs.wait(
                    thread["thread_id"], pattern, input={"input": INPUTS[pattern]},
                    context=context,
                )  # fmt: skip
                assert isinstance(values, dict) and "__error__" not in values, values
                assert values["output"].strip(), (pattern, values)
                assert values["usage"], (pattern, values)
                assert served.checkpoint_count(thread["thread_id"]) > 0


async def test_every_schema_is_filled_with_meaning_or_fails_clearly(on_embedded: Path) -> None:
    # The conformance set (quorum.evals.conformance) on the small model: each of Quorum's schemas
    # asked through the node that asks for it in a run. A 135M model fails some of them; what
    # must hold is that no reply Quorum accepts is hollow (judged by the bench, not by
    # Quorum's own check), and that a node that gets none says so.
    rows = await conformance("smollm2-135m", 1, numbers=3)

    assert [row.schema for row in rows] == [case.schema for case in cases(3)]
    for row in rows:
        assert row.valid + len(row.errors) == row.n, row
        assert row.filled == row.valid, row
        assert all("gave no valid" in error for error in row.errors), row.errors


async def test_samples_of_one_prompt_differ_and_each_repeats(on_embedded: Path) -> None:
    # Self-consistency's samples on a real server at temperature 0.7: each has a seed of its
    # own (from the run's seed and its index), so they differ, and the same sample drawn
    # again is the same text.
    context = QuorumContext(temperature=0.7)
    prompt = [HumanMessage("Write one short sentence about tea.")]
    drawn = [(await models.ask("sampler", context, prompt, sample=i)).text for i in range(3)]
    again = (await models.ask("sampler", context, prompt, sample=1)).text

    assert len(set(drawn)) > 1, drawn
    assert again == drawn[1]
