"""OpenTelemetry spans of every pattern: the tree, the GenAI attributes, and the tokens served.

Each pattern runs in this process against the scripted OpenAI-compatible stub on loopback,
with Quorum's spans going to the SDK's in-memory exporter. The tree must be run -> agent ->
model call -> tool call, every span carrying the GenAI semantic-convention attributes, and
the tokens on the model-call spans must equal what the stub reported in its replies (counted
at the stub). A `quorum run` in a subprocess, configured only by the standard OTEL_*
variables, must deliver its spans to an OTLP/HTTP receiver on loopback that decodes them
with opentelemetry-proto.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import quorum
from quorum import telemetry
from quorum.context import QuorumContext
from quorum.settings import get_settings
from quorum.testing.stub import STUB_MODEL, Reply, quorum_env, schema_name
from tests.test_budgets import CountingStub, cli
from tests.trace_receivers import OtlpReceiver

INPUTS = {
    "orchestrator": "Compare SQLite and PostgreSQL for a small team",
    "pipeline": "At what temperature does water boil?",
    "debate": "Is Rust or Go better for a CLI?",
    "react": "What is 6 times 7?",
}
AGENTS = {
    "orchestrator": {"planner", "researcher (s1)", "analyst (s2)", "writer (s3)", "synthesizer"},
    "pipeline": {"research", "summarize", "fact_check", "format_report"},
    "debate": {"debater_a", "debater_b", "judge"},
    "react": {"agent"},
}
"""The agent spans each pattern's run must have, by name."""
WITH_TOOLS = {"orchestrator", "pipeline", "react"}
"""Patterns whose agents call a tool in a default stub run (the calculator)."""


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingStub]:
    with CountingStub() as running:
        monkeypatch.setenv("QUORUM_BASE_URL", running.base_url)
        monkeypatch.setenv("QUORUM_API_KEY", "test-key")
        monkeypatch.setenv("QUORUM_MODEL", STUB_MODEL)
        get_settings.cache_clear()
        yield running


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with telemetry.use_provider(provider):
        yield exporter
    provider.shutdown()


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def operation(span: ReadableSpan) -> str:
    return str(attributes(span).get("gen_ai.operation.name"))


@pytest.mark.parametrize("pattern", list(INPUTS))
async def test_span_tree_and_genai_attributes(
    pattern: str, stub: CountingStub, exporter: InMemorySpanExporter
) -> None:
    thread = await quorum.run(pattern, INPUTS[pattern], context=QuorumContext(max_tool_calls=1))
    assert thread.status == "completed", thread.error
    spans = exporter.get_finished_spans()
    by_id = {span.context.span_id: span for span in spans}
    assert len({span.context.trace_id for span in spans}) == 1, "one trace per run"

    (run,) = [s for s in spans if s.parent is None]
    assert run.name == f"quorum.{pattern}"
    assert attributes(run) | {
        "gen_ai.operation.name": "invoke_workflow",
        "quorum.pattern": pattern,
        "quorum.thread_id": thread.thread_id,
        "quorum.status": "completed",
    } == attributes(run)

    agents = [s for s in spans if operation(s) == "invoke_agent"]
    assert {s.name for s in agents} == AGENTS[pattern]
    for agent in agents:
        assert agent.parent is not None and agent.parent.span_id == run.context.span_id
        assert attributes(agent)["quorum.pattern"] == pattern
        assert attributes(agent)["quorum.thread_id"] == thread.thread_id
        assert attributes(agent)["gen_ai.agent.name"] == attributes(agent)["quorum.agent"]

    chats = [s for s in spans if operation(s) == "chat"]
    served = stub.served
    assert len(chats) == len(served), "one model-call span per reply the stub sent"
    for chat in chats:
        parent = by_id[chat.parent.span_id] if chat.parent else None
        assert parent is not None and operation(parent) == "invoke_agent"
        found = attributes(chat)
        assert chat.name == f"chat {STUB_MODEL}"
        assert found["gen_ai.request.model"] == STUB_MODEL
        assert found["gen_ai.response.finish_reasons"] in (("stop",), ("tool_calls",))
        assert found["quorum.agent"] == attributes(parent)["quorum.agent"]
        assert found["quorum.attempts"] == 1
        assert found["quorum.replayed"] is False
    # Token counts equal what the stub reported, call for call.
    reported = sorted((u["prompt_tokens"], u["completion_tokens"]) for u in served)
    traced = sorted(
        (attributes(c)["gen_ai.usage.input_tokens"], attributes(c)["gen_ai.usage.output_tokens"])
        for c in chats
    )
    assert traced == reported
    assert attributes(run)["quorum.usage.input_tokens"] == sum(r[0] for r in reported)
    assert attributes(run)["quorum.usage.output_tokens"] == sum(r[1] for r in reported)

    tools = [s for s in spans if operation(s) == "execute_tool"]
    assert bool(tools) == (pattern in WITH_TOOLS)
    for tool in tools:
        parent = by_id[tool.parent.span_id] if tool.parent else None
        assert parent is not None and operation(parent) == "chat", "asked for by a model call"
        assert attributes(parent)["gen_ai.response.finish_reasons"] == ("tool_calls",)
        found = attributes(tool)
        assert tool.name == f"execute_tool {found['gen_ai.tool.name']}"
        assert found["gen_ai.tool.call.id"]
        assert isinstance(json.loads(found["gen_ai.tool.call.arguments"]), dict)
        if found["gen_ai.tool.name"] == "calculator":
            assert json.loads(found["gen_ai.tool.call.arguments"]) == {"expression": "6*7"}
            assert json.loads(found["gen_ai.tool.call.result"])["value"] == 42
    assert pattern not in WITH_TOOLS or "calculator" in {
        attributes(t)["gen_ai.tool.name"] for t in tools
    }


async def test_tool_spans_cut_long_text_and_mark_failures(
    stub: CountingStub, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUORUM_TRACE_MAX_CHARS", "12")
    get_settings.cache_clear()
    expressions = iter(["2 ** 200", "1 / 0"])

    def two_calls(body: dict) -> Reply | None:
        results = [m for m in body["messages"] if m.get("role") == "tool"]
        if body.get("tools") and len(results) < 2:
            return Reply(
                tool_calls=[{"name": "calculator", "args": {"expression": next(expressions)}}]
            )
        return None

    stub.responder = two_calls
    thread = await quorum.run("react", INPUTS["react"])
    assert thread.status == "completed", thread.error
    spans = [s for s in exporter.get_finished_spans() if operation(s) == "execute_tool"]
    long, failed = sorted(spans, key=lambda s: s.start_time)
    result = attributes(long)["gen_ai.tool.call.result"]
    assert result.startswith('{"expression') and result.endswith("characters]")
    assert len(result) < 50
    assert "error.type" not in attributes(long)
    assert attributes(failed)["error.type"] == "tool_error"
    assert failed.status.status_code.name == "ERROR"


async def test_a_failed_call_names_its_error_type_and_attempts(
    stub: CountingStub, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUORUM_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("QUORUM_RETRY_WAIT", "0")
    get_settings.cache_clear()
    stub.fail(500, times=2, when=lambda body: schema_name(body) == "Ruling")
    with pytest.raises(quorum.RunFailed):
        await quorum.run("debate", INPUTS["debate"])
    spans = exporter.get_finished_spans()
    failed = [s for s in spans if operation(s) == "chat" and "error.type" in attributes(s)]
    assert failed, "the model call that gave up is marked"
    assert attributes(failed[0])["error.type"] == "ModelError"
    assert attributes(failed[0])["quorum.attempts"] == 2
    assert [e.name for e in failed[0].events].count("attempt failed") == 2
    (run,) = [s for s in spans if s.parent is None]
    assert attributes(run)["error.type"] == "ModelError"
    (judge,) = [s for s in spans if s.name == "judge"]
    assert attributes(judge)["error.type"] == "ModelError"
    assert attributes(run)["quorum.status"] == "failed"


async def test_budget_left_is_on_model_calls(
    stub: CountingStub, exporter: InMemorySpanExporter
) -> None:
    context = QuorumContext(max_tokens=100_000, max_model_calls=50)
    await quorum.run("debate", INPUTS["debate"], context=context)
    chats = [s for s in exporter.get_finished_spans() if operation(s) == "chat"]
    calls_left = sorted(attributes(c)["quorum.budget_left.max_model_calls"] for c in chats)
    # Parallel debaters may both end before either reads the meter: ties are possible.
    assert calls_left[0] == 50 - len(chats) and calls_left[-1] <= 49
    assert all(0 < attributes(c)["quorum.budget_left.max_tokens"] < 100_000 for c in chats)


def test_nothing_configured_makes_no_tracer(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    get_settings.cache_clear()
    assert telemetry.tracer() is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    get_settings.cache_clear()
    with pytest.raises(quorum.QuorumError, match="http/protobuf"):
        telemetry.tracer()


# --- OTLP over HTTP, from the standard environment alone ---------------------------------------


def clean_env(tmp_path: Path, stub: CountingStub) -> dict[str, str]:
    """The environment of a deployment: the stub as endpoint, nothing traced yet."""
    env = quorum_env(stub, tmp_path)
    tracing = ("OTEL_", "LANGSMITH_", "LANGCHAIN_")
    return {k: v for k, v in env.items() if not k.startswith(tracing)} | {
        "LANGSMITH_TRACING": "false"
    }


def span_attribute(span: Any, key: str) -> Any:
    for attribute in span.attributes:
        if attribute.key == key:
            value = attribute.value
            return getattr(value, value.WhichOneof("value"))
    return None


@pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_ENDPOINT", "traces endpoint"])
@pytest.mark.slow
def test_a_cli_run_exports_over_otlp_http(
    variable: str, stub: CountingStub, tmp_path: Path
) -> None:
    with OtlpReceiver() as receiver:
        env = clean_env(tmp_path, stub)
        if variable == "OTEL_EXPORTER_OTLP_ENDPOINT":
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.url
            expected_path = "/v1/traces"
        else:
            env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = f"{receiver.url}/custom/traces"
            expected_path = "/custom/traces"
        env["OTEL_SERVICE_NAME"] = "quorum-under-test"
        done = cli("run", "react", INPUTS["react"], env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    assert set(receiver.paths) == {expected_path}
    assert receiver.services() == {"quorum-under-test"}
    spans = receiver.spans()
    names = [span.name for span in spans]
    assert names.count("quorum.react") == 1
    assert names.count("agent") == 2  # a tool call, then the answer
    assert names.count(f"chat {STUB_MODEL}") == 2
    assert names.count("execute_tool calculator") == 1
    ids = {span.span_id: span for span in spans}
    (root,) = [s for s in spans if not s.parent_span_id]
    assert span_attribute(root, "quorum.status") == "completed"
    for span in spans:
        if span is not root:
            assert span.parent_span_id in ids, f"{span.name} has its parent in the export"
    chats = [s for s in spans if s.name.startswith("chat ")]
    assert sorted(
        (
            span_attribute(c, "gen_ai.usage.input_tokens"),
            span_attribute(c, "gen_ai.usage.output_tokens"),
        )
        for c in chats
    ) == sorted((u["prompt_tokens"], u["completion_tokens"]) for u in stub.served)


@pytest.mark.slow
def test_console_exporter_writes_spans_to_stderr(stub: CountingStub, tmp_path: Path) -> None:
    env = clean_env(tmp_path, stub) | {"OTEL_TRACES_EXPORTER": "console"}
    done = cli("run", "react", INPUTS["react"], env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert '"name": "quorum.react"' in done.stderr
    assert '"name": "quorum.react"' not in done.stdout, "stdout keeps only the answer"


@pytest.mark.slow
def test_an_unsupported_exporter_setting_fails_before_anything_is_saved(
    tmp_path: Path,
) -> None:
    with CountingStub() as stub:
        env = clean_env(tmp_path, stub) | {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        }
        done = cli("run", "react", INPUTS["react"], env=env, cwd=tmp_path)
        assert not stub.chat_requests()
    assert done.returncode == 1, done.stderr  # a configuration error, as a bad endpoint is
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported" in done.stderr
    assert "http/protobuf" in done.stderr
    threads = cli("threads", "--json", env=env, cwd=tmp_path)
    assert json.loads(threads.stdout) == []


async def test_an_approval_names_who_decided_on_its_tool_span(
    stub: CountingStub,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("QUORUM_WORKSPACE_DIR", str(tmp_path))
    get_settings.cache_clear()

    def write_once(body: dict) -> Reply | None:
        if any(m.get("role") == "tool" for m in body["messages"]):
            return None
        args = {"path": "a.md", "content": "hi"}
        return Reply(tool_calls=[{"name": "write_file", "args": args}])

    stub.responder = write_once
    waiting = await quorum.run("react", "Save a note", thread_id="ap1")
    assert waiting.status == "waiting_approval"
    done = await quorum.resume("ap1", approve=True, decided_by="dana")

    assert done.status == "completed"
    [write] = [
        s for s in exporter.get_finished_spans()
        if attributes(s).get("gen_ai.tool.name") == "write_file"
        and "quorum.approval.decided_by" in attributes(s)
    ]  # fmt: skip
    decided = {k: v for k, v in attributes(write).items() if k.startswith("quorum.approval.")}
    assert decided == {
        "quorum.approval.action": "approve",
        "quorum.approval.decided_by": "dana",
        "quorum.approval.via": "python",
    }
