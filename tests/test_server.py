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
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.schema import GraphSchema

from quorum.context import context_json_schema
from tests.openai_stub import OpenAIStub, schema_name

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT = 90.0
RUN_TIMEOUT = 60.0
# Variables that could point the server at a real endpoint, trace store or proxy.
FOREIGN_PREFIXES = ("QUORUM_", "OPENAI_", "LANGSMITH_", "LANGCHAIN_", "LANGGRAPH_", "OTEL_")
PROXIES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


@dataclass
class Served:
    """A running `langgraph dev` and what it talks to."""

    url: str
    stub: OpenAIStub
    database: Path
    log: Path

    def log_text(self, containing: str = "") -> str:
        """The server's output so far (the lines `containing` a text), for failure messages."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        lines = re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines()
        return "\n".join(line for line in lines if containing in line)[-20_000:]

    def checkpoint_count(self, thread_id: str) -> int:
        """Top-level checkpoints of `thread_id` in the SQLite file, read past the server."""
        uri = f"file:{self.database}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as db:
            query = "SELECT COUNT(*) FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ''"
            return int(db.execute(query, (thread_id,)).fetchone()[0])


def _absolute(spec: str) -> str:
    """A langgraph.json path spec ('./pkg/mod.py:attr' or '.') made absolute to the repo."""
    if not spec.startswith("."):
        return spec  # a module path such as quorum.checkpoints.open_checkpointer
    path, _, attribute = spec.partition(":")
    absolute = str((REPO / path).resolve())
    return f"{absolute}:{attribute}" if attribute else absolute


def server_config(folder: Path) -> Path:
    """The repo's langgraph.json, to be served from `folder` instead of the repo root.

    The in-memory runtime keeps its threads and runs in ./.langgraph_api of its working
    directory and re-queues runs it finds unfinished there, and langgraph.json's `.env` is
    loaded over the process environment; run from the repo root, the test would share both
    with a developer's own `langgraph dev`. So the graphs, dependencies and checkpointer are
    the repo's, made absolute, and the environment comes only from this test.
    """
    config = json.loads((REPO / "langgraph.json").read_text())
    config["graphs"] = {name: _absolute(spec) for name, spec in config["graphs"].items()}
    config["dependencies"] = [_absolute(dep) for dep in config.get("dependencies", [])]
    if "checkpointer" in config:
        config["checkpointer"]["path"] = _absolute(config["checkpointer"]["path"])
    config["env"] = {}
    path = folder / "langgraph.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def server_env(stub: OpenAIStub, database: Path) -> dict[str, str]:
    """The server's environment: the stub as the only model, and nothing phoning home."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith(FOREIGN_PREFIXES) and name.lower() not in PROXIES
    }
    return env | {
        "QUORUM_BASE_URL": stub.base_url,
        "QUORUM_API_KEY": "test",
        "QUORUM_MODEL": "stub-model",
        "QUORUM_DATABASE": str(database),
        "QUORUM_MAX_RETRIES": "0",
        "LANGSMITH_TRACING": "false",
        # langgraph-cli posts each command to its analytics endpoint unless this is "1".
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        # langgraph-api asks PyPI for newer releases at startup unless this is set.
        "LANGGRAPH_NO_VERSION_CHECK": "true",
        "NO_PROXY": "127.0.0.1,localhost",
        "NO_COLOR": "1",
    }


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_ready(served: Served, process: subprocess.Popen[bytes]) -> None:
    """Poll /ok until the server answers; fail with its log if it dies or takes too long."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"langgraph dev exited with {process.returncode} before it was ready\n"
                f"--- server log ---\n{served.log_text()}"
            )
        try:
            if httpx.get(f"{served.url}/ok", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    pytest.fail(
        f"langgraph dev was not ready after {READY_TIMEOUT:.0f} s\n"
        f"--- server log ---\n{served.log_text()}"
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    """End the server and every process it started."""
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One `langgraph dev` for the module, backed by one OpenAI stub."""
    folder = tmp_path_factory.mktemp("langgraph-dev")
    cli = Path(sys.executable).with_name("langgraph")
    assert cli.exists(), f"{cli} is missing: install quorum[server]"
    with OpenAIStub() as stub:
        port = free_port()
        served = Served(
            f"http://127.0.0.1:{port}", stub, folder / "studio.db", folder / "server.log"
        )
        command = [
            str(cli), "dev", "--port", str(port), "--host", "127.0.0.1", "--no-browser",
            "--no-reload", "--config", str(server_config(folder)),
        ]  # fmt: skip
        with served.log.open("wb") as log:
            process = subprocess.Popen(
                command,
                cwd=folder,
                env=server_env(stub, served.database),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so teardown ends it all
            )
        try:
            wait_until_ready(served, process)
            yield served
        finally:
            stop(process)


@pytest.fixture
def stub(served: Served) -> OpenAIStub:
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
    assert sum(schema_name(body) == "Critique" for body in bodies) == 4
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
    served: Served, stub: OpenAIStub, case: Case
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


async def test_streamed_run_gets_usage_from_the_stream(served: Served, stub: OpenAIStub) -> None:
    """In `messages` mode every model call streams; usage must come from the final chunk."""
    async with get_client(url=served.url, api_key=None, timeout=RUN_TIMEOUT) as client:
        thread = await client.threads.create()
        events = [
            part
            async for part in client.runs.stream(
                thread["thread_id"],
                "orchestrator",
                input={"input": "Plan a small garden."},
                stream_mode=["values", "messages-tuple"],
            )
        ]

    kinds = {part.event for part in events}
    assert "error" not in kinds, [p.data for p in events if p.event == "error"]
    assert "messages" in kinds, kinds
    values = next(part.data for part in reversed(events) if part.event == "values")
    bodies = stub.chat_bodies()
    assert bodies and all(body.get("stream") for body in bodies)
    assert all(body["stream_options"] == {"include_usage": True} for body in bodies)
    assert values["output"].strip()
    assert_usage_matches(values, bodies)


async def schemas_of_every_assistant(served: Served) -> dict[str, GraphSchema]:
    """GET /assistants/{id}/schemas for every assistant, by graph id."""
    async with get_client(url=served.url, api_key=None, timeout=RUN_TIMEOUT) as client:
        assistants = await client.assistants.search(limit=100)
        return {
            assistant["graph_id"]: await client.assistants.get_schemas(assistant["assistant_id"])
            for assistant in assistants
        }


async def test_assistants_match_langgraph_json_and_publish_context_schema(
    served: Served,
) -> None:
    declared = json.loads((REPO / "langgraph.json").read_text())["graphs"]
    expected = set(context_json_schema()["properties"])
    schemas = await schemas_of_every_assistant(served)

    assert set(schemas) == set(declared)
    for graph, published in schemas.items():
        context_schema = published["context_schema"]
        assert context_schema is not None, graph
        assert set(context_schema["properties"]) == expected, graph


async def test_assistants_publish_input_and_output_schemas(served: Served) -> None:
    """Studio draws a graph's input form from input_schema; null leaves it without one."""
    schemas = await schemas_of_every_assistant(served)

    for graph, published in schemas.items():
        inputs, outputs = published["input_schema"], published["output_schema"]
        assert inputs is not None and outputs is not None, (
            f"{graph} has no input or output schema\n"
            f"--- server log ---\n{served.log_text('schema')}"
        )
        assert "input" in inputs["properties"], graph
        assert "output" in outputs["properties"], graph
