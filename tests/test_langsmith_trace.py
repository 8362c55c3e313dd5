"""LangSmith traces as a LangSmith server receives them: named by agent, linked, with metadata.

`quorum run` runs in its own process with nothing but the standard LangSmith variables
(`LANGSMITH_TRACING`, `LANGSMITH_ENDPOINT`, `LANGSMITH_API_KEY`) pointing at a stand-in
server on loopback (tests/trace_receivers.py), which takes whatever the installed langsmith
client sends (multipart, zstd-compressed, or batched JSON) and keeps every run. The tree must
have one root per run named `quorum.PATTERN` carrying pattern, thread, tokens and cost (equal
to what the model stub served) once; workers named by agent and plan step, model calls named
by their agent, never `worker` or `ChatOpenAI`; and no run repeating the run's settings.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.test_budgets import PRICES, CountingStub, cli
from tests.test_tracing import clean_env
from tests.trace_receivers import LangSmithCapture

Json = dict[str, Any]
CANARY = "lsv2-canary-7f3e1a9c"
THREAD = "lstrace0001"


def traced_env(tmp_path: Path, stub: CountingStub, capture: LangSmithCapture) -> dict[str, str]:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(PRICES))
    return clean_env(tmp_path, stub) | {
        "LANGSMITH_TRACING": "true",
        "LANGSMITH_ENDPOINT": capture.url,
        "LANGSMITH_API_KEY": CANARY,
        "LANGSMITH_PROJECT": "quorum-tests",
        "QUORUM_PRICES": str(prices),
    }


def ancestors(runs: dict[str, Json], run: Json) -> list[str]:
    names = []
    while run.get("parent_run_id"):
        run = runs[str(run["parent_run_id"])]
        names.append(run["name"])
    return names


@pytest.mark.parametrize("compression", [True, False], ids=["zstd", "plain"])
@pytest.mark.slow
def test_orchestrator_run_tree(compression: bool, tmp_path: Path) -> None:
    with CountingStub() as stub, LangSmithCapture(compression=compression) as capture:
        done = cli(
            "run",
            "orchestrator",
            "Compare SQLite and PostgreSQL",
            "--thread",
            THREAD,
            env=traced_env(tmp_path, stub, capture),
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
    assert ("zstd" in capture.encodings) == compression
    runs = capture.runs
    assert runs, "the client sent runs"

    (root,) = capture.roots()
    assert root["name"] == "quorum.orchestrator"
    assert {str(run.get("trace_id")) for run in runs.values()} == {str(root["id"])}
    for run in runs.values():
        if run is not root:
            assert str(run["parent_run_id"]) in runs, f"{run['name']} has its parent"

    # Pattern, thread, tokens and cost: once, on the root, equal to what was served.
    served = stub.served
    tokens_in = sum(u["prompt_tokens"] for u in served)
    tokens_out = sum(u["completion_tokens"] for u in served)
    meta = capture.metadata(root)
    assert meta["quorum_pattern"] == "orchestrator"
    assert meta["thread_id"] == THREAD
    assert meta["quorum_input_tokens"] == tokens_in
    assert meta["quorum_output_tokens"] == tokens_out
    assert meta["quorum_cost_usd"] == pytest.approx(tokens_in * 0.01 + tokens_out * 0.04)
    assert set(meta["quorum_usage"]) == {
        "planner",
        "researcher",
        "analyst",
        "writer",
        "synthesizer",
    }
    for run in runs.values():
        found = capture.metadata(run)
        assert "quorum_context" not in found, "the run's settings are never traced"
        if run is not root:
            assert not {"quorum_pattern", "thread_id", "quorum_input_tokens"} & found.keys()

    # Named by agent: workers by agent and plan step, model calls by their agent.
    names = [run["name"] for run in runs.values()]
    assert "worker" not in names and "ChatOpenAI" not in names
    assert {"researcher (s1)", "analyst (s2)", "writer (s3)"} <= set(names)
    models = [run for run in runs.values() if run["run_type"] == "llm"]
    assert sorted(run["name"] for run in models) == sorted(
        [
            "planner",
            "planner",
            "researcher",
            "researcher",
            "analyst",
            "analyst",
            "writer",
            "synthesizer",
        ]  # fmt: skip
    )
    for model in models:
        assert capture.metadata(model)["quorum_agent"] == model["name"]
        if model["name"] in ("researcher", "analyst", "writer"):
            label = {
                "researcher": "researcher (s1)",
                "analyst": "analyst (s2)",
                "writer": "writer (s3)",
            }
            assert label[model["name"]] in ancestors(runs, model)
    # The researcher's and the analyst's calculator calls, each under its worker.
    tools = [run for run in runs.values() if run["run_type"] == "tool"]
    assert [tool["name"] for tool in tools] == ["calculator", "calculator"]
    workers = {"researcher (s1)", "analyst (s2)"}
    assert sorted(str(workers & set(ancestors(runs, tool))) for tool in tools) == [
        "{'analyst (s2)'}",
        "{'researcher (s1)'}",
    ]
    worker = next(r for r in runs.values() if r["name"] == "analyst (s2)")
    assert capture.metadata(worker) | {"quorum_agent": "analyst", "quorum_plan_step": "s2"} == (
        capture.metadata(worker)
    )
    # No run carries the process that ran it (a lease holder: host:pid:nonce).
    holder = re.compile(rb"\b" + re.escape(socket.gethostname().encode()) + rb":\d+:[0-9a-f]{8}\b")
    assert not any(holder.search(body) for body in capture.bodies)
    # The LangSmith key authenticates requests; it is in no payload.
    assert all(CANARY.encode() not in body for body in capture.bodies)
