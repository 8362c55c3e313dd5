"""A run started from Studio (the LangGraph server) lives as a `quorum run` does.

The same ReAct question goes once through `langgraph dev`, driven with the LangGraph SDK as
Studio drives it, and once through the `quorum` command, both against one scripted OpenAI
stub, each exporting its traces to its own OTLP receiver. Judged from outside, the two must
not differ: the same spans in the trace (the run, each agent step, each model call, the tool),
the same ledger read from each database (calls and tokens per agent), and the same budget
stop: with `max_model_calls=1` both end `budget_exceeded` after the same requests at the stub.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from langgraph_sdk import get_client

import quorum
from quorum.testing.langgraph_dev import RUN_TIMEOUT, langgraph_dev, stub_settings
from quorum.testing.stub import OpenAIStub, quorum_env
from tests.trace_receivers import OtlpReceiver

pytestmark = pytest.mark.server

QUESTION = "What is six times seven?"


async def studio_run(url: str, context: dict[str, Any]) -> str:
    """Run the ReAct graph on a new server thread, as Studio does; the thread's id."""
    async with get_client(url=url, api_key=None, timeout=RUN_TIMEOUT) as client:
        thread_id = str((await client.threads.create())["thread_id"])
        await client.runs.wait(
            thread_id, "react", input={"input": QUESTION}, context=context, raise_error=False
        )
    return thread_id


def cli_run(env: dict[str, str], cwd: Path, thread_id: str, *settings: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "quorum.cli", "run", "react", QUESTION, "--thread", thread_id,
         *settings],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )  # fmt: skip
    assert done.returncode in (0, 4), done.stderr  # 4: the budget stopped it


def traces(receiver: OtlpReceiver, runs: int) -> list[Counter[str]]:
    """The span names of each trace the receiver got, waiting for `runs` whole ones."""
    deadline = time.monotonic() + 30
    while True:
        by_trace: dict[bytes, list[Any]] = {}
        for span in receiver.spans():
            by_trace.setdefault(span.trace_id, []).append(span)
        done = [
            spans for spans in by_trace.values() if any(s.name == "quorum.react" for s in spans)
        ]
        if len(done) >= runs or time.monotonic() > deadline:
            return [Counter(s.name for s in spans) for spans in done]
        time.sleep(0.5)


def requests_during(stub: OpenAIStub, action: Any) -> tuple[int, Any]:
    """The chat requests the stub served while `action` ran, and what it returned."""
    before = len(stub.chat_bodies())
    result = action()
    return len(stub.chat_bodies()) - before, result


def ledger_rows(thread_id: str, database: str) -> dict[str, tuple[int, int, int]]:
    spent = asyncio.run(quorum.ledger(thread_id, database=database))
    return {agent: (r.calls, r.input_tokens, r.output_tokens) for agent, r in spent.agents.items()}


def test_a_studio_run_is_traced_metered_and_bounded_as_a_cli_run_is(tmp_path: Path) -> None:
    with OpenAIStub() as stub, OtlpReceiver() as studio_traces, OtlpReceiver() as cli_traces:
        otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": studio_traces.url, "OTEL_SERVICE_NAME": "quorum"}
        server = tmp_path / "server"
        server.mkdir()
        with langgraph_dev(server, stub_settings(stub.base_url) | otlp) as served:
            studio_sent, studio = requests_during(
                stub, lambda: asyncio.run(studio_run(served.url, {}))
            )
            studio_bounded, studio_b = requests_during(
                stub, lambda: asyncio.run(studio_run(served.url, {"max_model_calls": 1}))
            )
            studio_spans = traces(studio_traces, runs=2)
        studio_db = str(served.database)

        cli = tmp_path / "cli"
        cli.mkdir()
        env = quorum_env(stub, cli) | {
            "OTEL_EXPORTER_OTLP_ENDPOINT": cli_traces.url,
            "OTEL_SERVICE_NAME": "quorum",
        }
        cli_sent, _ = requests_during(stub, lambda: cli_run(env, cli, "cli"))
        cli_bounded, _ = requests_during(
            stub, lambda: cli_run(env, cli, "cli-b", "--set", "max_model_calls=1")
        )
        cli_spans = traces(cli_traces, runs=2)
    cli_db = str(cli / "data" / "quorum.db")

    # The same requests, the same trace, the same ledger.
    assert studio_sent == cli_sent == 2  # the calculator call, then the answer
    assert len(studio_spans) == len(cli_spans) == 2
    assert sorted(map(sorted, studio_spans)) == sorted(map(sorted, cli_spans))
    full = next(t for t in cli_spans if t["execute_tool calculator"])
    assert full["quorum.react"] == 1 and full["agent"] == 2
    assert ledger_rows(studio, studio_db) == ledger_rows("cli", cli_db)
    # The same budget stop: one call asked, the thread stopped, resumable.
    assert studio_bounded == cli_bounded == 1
    stopped = asyncio.run(quorum.get_thread(studio_b, database=studio_db))
    assert stopped.status == asyncio.run(quorum.get_thread("cli-b", database=cli_db)).status
    assert stopped.status == "budget_exceeded"
