"""The four patterns served by `langgraph dev` and driven over HTTP with the LangGraph SDK.

This is what Studio relies on: the graphs and the checkpointer named in langgraph.json load in
the real dev server, runs finish with a per-run `context`, every agent's usage reaches the
state, the checkpoints land in Quorum's SQLite file (QUORUM_DATABASE) and are read back from it
through Quorum's strict serializer, and each assistant publishes the context schema Studio
draws its form from. The models are the scripted OpenAI stub on loopback; nothing else is
reachable, and the server's own telemetry and version checks are switched off.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from langgraph_sdk import get_client
from langgraph_sdk.schema import GraphSchema

from quorum.context import QuorumContext, context_json_schema
from quorum.testing.langgraph_dev import REPO, RUN_TIMEOUT, langgraph_dev, stub_settings
from quorum.testing.stub import OpenAIStub, Reply, isolated_environ, schema_name, text_of

pytestmark = pytest.mark.server


@dataclass
class StubServed:
    """The dev server and the stub it talks to."""

    served: StubServed
    stub: OpenAIStub

    def __getattr__(self, name: str) -> Any:
        return getattr(self.served, name)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StubServed]:
    """One `langgraph dev` for the module, backed by one OpenAI stub."""
    folder = tmp_path_factory.mktemp("langgraph-dev")
    # Agents are offered the tools of the test MCP server too (started over stdio per call).
    mcp = {
        "transport": "stdio",
        "command": sys.executable,
        "args": ["-m", "tests.mcp_server"],
        "cwd": str(REPO),
        "env": {"MCP_CALLS": str(folder / "mcp-calls.jsonl")},
        "tools": {"add": {"side_effects": False}},
    }
    (folder / "mcp.json").write_text(json.dumps({"servers": {"numbers": mcp}}))
    with OpenAIStub() as stub:
        settings = stub_settings(stub.base_url) | {
            "QUORUM_MCP_CONFIG": str(folder / "mcp.json"),
        }
        with langgraph_dev(folder, settings) as served:
            yield StubServed(served, stub)


@pytest.fixture
def stub(served: StubServed) -> OpenAIStub:
    """The served stub, with the previous test's requests and scripting forgotten."""
    served.stub.reset()
    return served.stub


@dataclass(frozen=True)
class Case:
    """One pattern's run over HTTP: its input, a context that visibly changes the run, and
    what that change must look like in the values and the requests the stub received."""

    graph: str
    input: str
    context: dict[str, Any]
    check: Callable[[dict[str, Any], list[dict[str, Any]]], None]


def _writer_on_its_own_model(values: dict[str, Any], bodies: list[dict[str, Any]]) -> None:
    assert set(values["results"]) == {"s1", "s2", "s3"}
    models = [body["model"] for body in bodies]
    assert models.count("stub-writer") == values["usage"]["writer"]["calls"] == 1
    assert set(models) == {"stub-model", "stub-writer"}


def _temperature_applied(values: dict[str, Any], bodies: list[dict[str, Any]]) -> None:
    assert values["fact_check"]["verdict"] == "supported"
    assert {body["temperature"] for body in bodies} == {0.5}


def _two_rounds(values: dict[str, Any], bodies: list[dict[str, Any]]) -> None:
    assert values["round"] == 2
    # Two rounds of critique by both debaters; the default revision never agrees.
    critiques = [b for b in bodies if "Critique that answer" in text_of(b["messages"][-1])]
    assert len(critiques) == 4 and all(schema_name(b) is None for b in critiques)  # prose
    assert values["output"] == values["verdict"]["final_answer"]


def _tool_ran_on_run_model(values: dict[str, Any], bodies: list[dict[str, Any]]) -> None:
    assert values["status"] == "answered"
    assert "42" in values["output"]  # the stub asked for calculator(6*7); the server ran it
    assert {body["model"] for body in bodies} == {"stub-react"}


CASES = [
    Case(
        "orchestrator",
        "Compare SQLite and PostgreSQL for a desktop app.",
        {"models": {"writer": "stub-writer"}},
        _writer_on_its_own_model,
    ),
    Case("pipeline", "Why is the sky blue?", {"temperature": 0.5}, _temperature_applied),
    Case("debate", "Tabs or spaces?", {"max_rounds": 2}, _two_rounds),
    Case("react", "What is six times seven?", {"model": "stub-react"}, _tool_ran_on_run_model),
]


def assert_usage_matches(values: dict[str, Any], bodies: list[dict[str, Any]]) -> None:
    """Every agent's ledger is filled, and it accounts for every request the stub served."""
    usage = values["usage"]
    assert usage, "no agent recorded usage"
    for agent, spent in usage.items():
        assert spent["calls"] >= 1 and spent["input_tokens"] > 0, (agent, spent)
        assert spent["output_tokens"] > 0, (agent, spent)
    assert sum(spent["calls"] for spent in usage.values()) == len(bodies)


@pytest.mark.parametrize("case", CASES, ids=[case.graph for case in CASES])
async def test_pattern_runs_over_http_and_persists(
    served: StubServed, stub: OpenAIStub, case: Case
) -> None:
    async with get_client(url=served.url, api_key=None, timeout=RUN_TIMEOUT) as client:
        thread = await client.threads.create()
        thread_id = thread["thread_id"]
        run = await client.runs.create(
            thread_id, case.graph, input={"input": case.input}, context=case.context
        )
        values = await client.runs.join(thread_id, run["run_id"])
        finished = await client.runs.get(thread_id, run["run_id"])
        state = await client.threads.get_state(thread_id)
        history = await client.threads.get_history(thread_id, limit=1000)

    assert finished["status"] == "success", (
        f"{case.graph} run ended {finished['status']}: {values}\n"
        f"--- server log ---\n{served.log_text()}"
    )
    assert isinstance(values["output"], str) and values["output"].strip()
    bodies = stub.chat_bodies()
    assert bodies, "the stub received no model requests"
    assert_usage_matches(values, bodies)
    case.check(values, bodies)
    # The checkpoints are in Quorum's SQLite file, and the server reads them back from it
    # (through the strict serializer) for the thread's state and history.
    assert served.checkpoint_count(thread_id) == len(history) > 1
    saved = state["values"]
    assert isinstance(saved, dict)
    assert (saved["output"], saved["usage"]) == (values["output"], values["usage"])


async def test_streamed_run_gets_usage_from_the_stream(
    served: StubServed, stub: OpenAIStub
) -> None:
    """In `messages` mode every model call streams, named by its agent; usage must come from
    the final chunk."""
    async with get_client(url=served.url, api_key=None, timeout=RUN_TIMEOUT) as client:
        thread = await client.threads.create()
        events = [
            part
            async for part in client.runs.stream(
                thread["thread_id"],
                "orchestrator",
                input={"input": "Plan a small garden."},
                stream_mode=["values", "messages-tuple"],
                stream_subgraphs=True,  # the workers' tool loops are subgraphs
            )
        ]

    # With subgraphs, a subgraph's events are named "mode|namespace".
    kinds = {part.event.split("|")[0] for part in events}
    assert "error" not in kinds, [p.data for p in events if p.event == "error"]
    assert "messages" in kinds, kinds
    values = next(part.data for part in reversed(events) if part.event == "values")
    bodies = stub.chat_bodies()
    assert bodies and all(body.get("stream") for body in bodies)
    assert all(body["stream_options"] == {"include_usage": True} for body in bodies)
    assert values["output"].strip()
    assert_usage_matches(values, bodies)
    # Studio and langgraph-sdk clients see who writes: every model call's chunks name its
    # agent, say whether it is JSON for a schema, and the answer comes a piece at a time.
    written = [part.data for part in events if part.event.split("|")[0] == "messages"]
    by_agent: dict[str, list[dict]] = {}
    structured: dict[str, set[bool]] = {}
    for message, metadata in written:
        if "quorum_agent" in metadata:
            by_agent.setdefault(metadata["quorum_agent"], []).append(message)
            structured.setdefault(metadata["quorum_agent"], set()).add(
                metadata["quorum_structured"]
            )
    assert {"planner", "researcher", "analyst", "writer", "synthesizer"} <= by_agent.keys()
    assert True in structured["planner"] and structured["synthesizer"] == {False}
    answer = [m["content"] for m in by_agent["synthesizer"] if m["type"] == "AIMessageChunk"]
    assert len(answer) > 1 and "".join(answer).strip() == values["output"].strip()


async def schemas_of_every_assistant(served: StubServed) -> dict[str, GraphSchema]:
    """GET /assistants/{id}/schemas for every assistant, by graph id."""
    async with get_client(url=served.url, api_key=None, timeout=RUN_TIMEOUT) as client:
        assistants = await client.assistants.search(limit=100)
        return {
            assistant["graph_id"]: await client.assistants.get_schemas(assistant["assistant_id"])
            for assistant in assistants
        }


async def test_assistants_match_langgraph_json_and_publish_context_schema(
    served: StubServed,
) -> None:
    declared = json.loads((REPO / "langgraph.json").read_text())["graphs"]
    expected = set(context_json_schema()["properties"])
    schemas = await schemas_of_every_assistant(served)

    assert set(schemas) == set(declared)
    for graph, published in schemas.items():
        context_schema = published["context_schema"]
        assert context_schema is not None, graph
        assert set(context_schema["properties"]) == expected, graph


async def test_assistants_publish_input_and_output_schemas(served: StubServed) -> None:
    """Studio draws a graph's input form from input_schema; null leaves it without one."""
    schemas = await schemas_of_every_assistant(served)

    for graph, published in schemas.items():
        inputs, outputs = published["input_schema"], published["output_schema"]
        assert inputs is not None and outputs is not None, (
            f"{graph} has no input or output schema\n"
            f"--- server log ---\n{served.log_text('schema')}"
        )
        assert inputs["required"] == ["input"], graph
        assert list(inputs["properties"]) == ["input"], graph
        assert "output" in outputs["properties"], graph
        # The run settings appear once: as the context schema, not again as configurable.
        assert not published["config_schema"], (graph, published["config_schema"])


async def run_refused(served: StubServed, graph: str, **run: Any) -> tuple[dict, dict]:
    """Run `graph` over HTTP; the finished run and what `join` returned."""
    async with get_client(url=served.url, api_key=None, timeout=RUN_TIMEOUT) as client:
        thread = await client.threads.create()
        created = await client.runs.create(thread["thread_id"], graph, **run)
        joined = await client.runs.join(thread["thread_id"], created["run_id"])
        finished = await client.runs.get(thread["thread_id"], created["run_id"])
    return finished, joined


@pytest.mark.parametrize(
    ("graph", "run", "message"),
    [
        (
            "orchestrator",
            {"input": {"goal": "Plan a garden."}},
            "invalid input for the orchestrator pattern: input: Field required; "
            "goal: Extra inputs are not permitted",
        ),
        (
            "orchestrator",
            {"input": {"input": "Plan a garden."}, "context": {"max_plan_steps": 0}},
            "invalid context setting: max_plan_steps: Input should be greater than or equal to 1",
        ),
        (
            "react",
            {"input": {"input": "6*7?"}, "context": {"max_steps": 0}},
            "invalid context setting: max_steps: Input should be greater than or equal to 1",
        ),
    ],
    ids=["bad-key", "bad-setting", "react-max-steps-0"],
)
async def test_a_bad_key_or_setting_is_refused_over_http_with_a_clear_error(
    served: StubServed, stub: OpenAIStub, graph: str, run: dict[str, Any], message: str
) -> None:
    finished, joined = await run_refused(served, graph, **run)

    assert finished["status"] == "error", (finished, joined)
    assert joined["__error__"]["error"] == "UsageError", joined
    assert message in joined["__error__"]["message"], joined
    assert stub.chat_bodies() == [], "a refused run must not reach the model"


async def test_a_run_without_context_completes_with_the_defaults(
    served: StubServed, stub: OpenAIStub
) -> None:
    async with get_client(url=served.url, api_key=None, timeout=RUN_TIMEOUT) as client:
        thread = await client.threads.create()
        values = await client.runs.wait(thread["thread_id"], "react", input={"input": "6*7?"})
        state = await client.threads.get_state(thread["thread_id"])
    # The settings are stored once for the run, in the store the server and CLI share.
    with sqlite3.connect(served.database) as conn:
        records = conn.execute(
            "SELECT key, value FROM store WHERE prefix = ?", (f"quorum_runs.{thread['thread_id']}",)
        ).fetchall()

    assert values["status"] == "answered" and "42" in values["output"], values
    assert "quorum_context" not in state["metadata"]
    assert [(key, json.loads(value)["context"]) for key, value in records] == [
        (state["metadata"]["run_id"], QuorumContext().to_dict())
    ]


async def test_studio_threads_show_up_in_the_command_line(
    served: StubServed, stub: OpenAIStub
) -> None:
    """Studio and the CLI share one store: a run made over HTTP is listed, shown and resumable."""
    async with get_client(url=served.url, api_key=None, timeout=RUN_TIMEOUT) as client:
        thread = await client.threads.create()
        await client.runs.wait(thread["thread_id"], "debate", input={"input": "Tabs?"})
    env = {
        **isolated_environ(),
        "QUORUM_DATABASE": str(served.database),
        "QUORUM_BASE_URL": stub.base_url,
        "QUORUM_MODEL": "stub-model",
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "quorum.cli", *args],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    listed = cli("threads", "--json")
    shown = cli("show", thread["thread_id"])
    resumed = cli("resume", thread["thread_id"])

    assert listed.returncode == 0, listed.stderr
    rows = {t["thread_id"]: t for t in json.loads(listed.stdout)}
    assert (rows[thread["thread_id"]]["pattern"], rows[thread["thread_id"]]["status"]) == (
        "debate",
        "completed",
    )
    assert shown.returncode == 0 and f"debate thread {thread['thread_id']}: completed" in (
        shown.stdout
    )
    assert resumed.returncode == 0, resumed.stderr


async def test_a_studio_run_calls_a_tool_of_an_mcp_server(
    served: StubServed, stub: OpenAIStub
) -> None:
    def add_once(body: dict[str, Any]) -> Reply | None:
        answered = any(m.get("role") == "tool" for m in body.get("messages", []))
        return None if answered else Reply(tool_calls=[{"name": "add", "args": {"a": 2, "b": 40}}])

    stub.responder = add_once
    async with get_client(url=served.url, api_key=None, timeout=RUN_TIMEOUT) as client:
        thread = await client.threads.create()
        values = await client.runs.wait(thread["thread_id"], "react", input={"input": "2+40?"})

    assert values["status"] == "answered", f"{values}\n{served.log_text()}"
    assert "2 + 40 = 42" in values["output"]
    calls = (served.database.parent / "mcp-calls.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in calls] == [{"tool": "add", "args": {"a": 2, "b": 40}}]
