"""Least privilege per agent: each agent is offered only the tools its role needs.

The ReAct agent, asked to act, is offered every tool; a researcher (the orchestrator's worker,
the pipeline's research stage) only tools without side effects, unless the run's
`agent_tools` grants it others. What each agent was offered is read from the scripted model's
log of every call (`Call.tools`), and what a refused call did from the workspace on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage

import quorum
from quorum.context import QuorumContext
from quorum.errors import UsageError
from quorum.testing import Script

READ_ONLY = {"search_documents", "read_document", "http_fetch", "calculator"}


def offered(script: Script, agent: str) -> list[set[str]]:
    return [set(call.tools) for call in script.calls if call.agent == agent]


async def test_a_researcher_cannot_write_and_the_react_agent_can(script: Script) -> None:
    await quorum.run("orchestrator", "Compare two databases")
    await quorum.run("pipeline", "Why is the sky blue?")
    await quorum.run("react", "What is 2+2?")

    for agent in ("researcher", "research"):
        [tools, *_] = offered(script, agent)
        assert READ_ONLY <= tools, (agent, tools)
        assert "write_file" not in tools, (agent, tools)
    tools = offered(script, "agent")[0]
    assert READ_ONLY | {"write_file"} <= tools
    # No web search provider is configured: a tool that can only fail is not offered.
    assert not any("web_search" in tools for tools in offered(script, "researcher"))
    assert "web_search" not in tools


async def test_web_search_is_offered_once_a_provider_is_configured_or_granted(
    script: Script, configure: Callable[..., None]
) -> None:
    granted = QuorumContext(agent_tools={"researcher": ["web_search"]})
    await quorum.run("orchestrator", "Compare two databases", context=granted)
    configure(tavily_api_key="tvly-test-key")
    await quorum.run("react", "What is 2+2?")

    assert offered(script, "researcher")[0] == {"web_search"}
    assert "web_search" in offered(script, "agent")[0]


async def test_a_run_grants_an_agent_exactly_the_tools_it_names(script: Script) -> None:
    context = QuorumContext(agent_tools={"researcher": ["calculator", "write_file"]})

    await quorum.run("orchestrator", "Compare two databases", context=context)

    assert offered(script, "researcher")[0] == {"calculator", "write_file"}


async def test_a_call_of_a_tool_not_offered_is_refused_and_runs_nothing(
    script: Script, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A researcher steered (say, by a fetched page) into writing a file.
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    monkeypatch.setenv("QUORUM_WORKSPACE_DIR", str(workspace))
    from quorum.settings import get_settings

    get_settings.cache_clear()
    calls = iter([AIMessage("", tool_calls=[{"name": "write_file", "id": "w1",
                  "args": {"path": "x.md", "content": "owned"}}])])  # fmt: skip

    script.on("researcher", lambda agent, messages: next(calls, "done"))
    finished = await quorum.run("orchestrator", "Compare two databases")

    assert finished.status == "completed"  # no approval was asked for: it was never offered
    assert not list(workspace.iterdir())
    refused = [m for m in script.calls if m.agent == "researcher"][1].messages[-1]
    assert "write_file" in refused.text and refused.status == "error"


async def test_a_grant_of_a_tool_that_does_not_exist_is_refused_before_anything_is_saved(
    script: Script,
) -> None:
    context = QuorumContext(agent_tools={"researcher": ["rm_rf"]})

    with pytest.raises(
        UsageError, match="agent_tools grants agent 'researcher' tools that do not exist: rm_rf"
    ):
        await quorum.run("orchestrator", "Compare", context=context, thread_id="g1")

    assert script.calls == []
    with pytest.raises(quorum.QuorumError):
        await quorum.get_thread("g1")
