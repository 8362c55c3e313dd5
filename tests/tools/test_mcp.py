"""Tools from MCP servers, offered to agents under Quorum's tool contract.

A real MCP server (tests/mcp_server.py, written with the `mcp` package's FastMCP) runs over
stdio (started by the MCP client for each session) and over streamable HTTP on loopback
(started by the test). A ReAct run against the scripted OpenAI server is offered its tools,
calls one, and the server's own log shows the call; a tool the settings file does not declare
is irreversible and waits for approval: nothing happens on disk until it is approved, and
then exactly once.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import quorum
from quorum.errors import ConfigError
from quorum.settings import get_settings
from quorum.testing.langgraph_dev import REPO, free_port, stop
from quorum.testing.stub import STUB_MODEL, OpenAIStub, Reply
from quorum.tools import default_tools


def calls_to(tool: str, args: dict[str, Any]):
    """A stub responder: call `tool` once when it is offered, then answer from its result."""

    def respond(body: dict[str, Any]) -> Reply | None:
        offered = [t["function"]["name"] for t in body.get("tools", [])]
        answered = any(m.get("role") == "tool" for m in body.get("messages", []))
        if tool in offered and not answered:
            return Reply(tool_calls=[{"name": tool, "args": args}])
        return None

    return respond


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIStub]:
    with OpenAIStub() as running:
        monkeypatch.setenv("QUORUM_BASE_URL", running.base_url)
        monkeypatch.setenv("QUORUM_API_KEY", "test")
        monkeypatch.setenv("QUORUM_MODEL", STUB_MODEL)
        get_settings.cache_clear()
        yield running


@pytest.fixture
def server_files(tmp_path: Path) -> dict[str, str]:
    """Where the MCP server logs its calls and saves its notes."""
    return {"MCP_CALLS": str(tmp_path / "calls.jsonl"), "MCP_NOTES": str(tmp_path / "notes.txt")}


def server_calls(files: dict[str, str]) -> list[dict[str, Any]]:
    path = Path(files["MCP_CALLS"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def configure(monkeypatch: pytest.MonkeyPatch, path: Path, servers: dict[str, Any]) -> None:
    path.write_text(json.dumps({"servers": servers}))
    monkeypatch.setenv("QUORUM_MCP_CONFIG", str(path))
    get_settings.cache_clear()


def stdio_server(files: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "transport": "stdio",
        "command": sys.executable,
        "args": ["-m", "tests.mcp_server"],
        "cwd": str(REPO),
        "env": files,
        **extra,
    }


@pytest.fixture
def http_server(server_files: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """The test MCP server over streamable HTTP on loopback; yields its URL."""
    port = free_port()
    log = (tmp_path / "mcp-http.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.mcp_server", "--port", str(port)],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", **server_files},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "mcp-http.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the MCP server did not listen in 30 s"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop(process)
        log.close()


async def test_react_calls_a_tool_of_an_mcp_server_over_stdio(
    stub: OpenAIStub,
    server_files: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    db: str,
) -> None:
    server = stdio_server(server_files, tools={"add": {"side_effects": False}})
    configure(monkeypatch, tmp_path / "mcp.json", {"numbers": server})
    stub.responder = calls_to("add", {"a": 2, "b": 40})

    info = await quorum.run("react", "What is 2 + 40?", database=db)

    assert info.status == "completed", info.error
    assert "2 + 40 = 42" in info.output
    assert server_calls(server_files) == [{"tool": "add", "args": {"a": 2, "b": 40}}]
    # The model was offered the server's tool with the server's own argument schema.
    offered = {t["function"]["name"]: t["function"] for t in stub.chat_bodies()[0]["tools"]}
    assert set(offered["add"]["parameters"]["properties"]) == {"a", "b"}
    assert {"calculator", "add", "save_note", "fail"} <= set(offered)


async def test_an_undeclared_mcp_tool_over_http_waits_for_approval_then_runs_once(
    stub: OpenAIStub,
    server_files: dict[str, str],
    http_server: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    db: str,
) -> None:
    server = {"transport": "streamable_http", "url": http_server}  # declares no tool
    configure(monkeypatch, tmp_path / "mcp.json", {"notes": server})
    stub.responder = calls_to("save_note", {"text": "tides turn twice a day"})
    notes = Path(server_files["MCP_NOTES"])

    waiting = await quorum.run("react", "Note that tides turn twice a day.", database=db)

    assert waiting.status == "waiting_approval"
    assert [(w["tool"], w["args"]) for w in waiting.waiting] == [
        ("save_note", {"text": "tides turn twice a day"})
    ]
    assert not notes.exists() and server_calls(server_files) == []

    done = await quorum.resume(waiting.thread_id, approve=True, database=db)
    again = await quorum.resume(waiting.thread_id, database=db)

    assert done.status == again.status == "completed", done.error
    assert notes.read_text() == "tides turn twice a day\n"
    assert [c["tool"] for c in server_calls(server_files)] == ["save_note"]


async def test_an_mcp_tool_declared_irreversible_waits_and_a_failure_reaches_the_agent(
    stub: OpenAIStub,
    server_files: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    db: str,
) -> None:
    config = tmp_path / "mcp.toml"
    config.write_text(
        f"""
        [servers.t]
        transport = "stdio"
        command = {json.dumps(sys.executable)}
        args = ["-m", "tests.mcp_server"]
        cwd = {json.dumps(str(REPO))}
        env = {{ MCP_CALLS = {json.dumps(server_files["MCP_CALLS"])} }}
        [servers.t.tools.fail]
        side_effects = false
        [servers.t.tools.save_note]
        irreversible = true
        """
    )
    monkeypatch.setenv("QUORUM_MCP_CONFIG", str(config))
    get_settings.cache_clear()
    by_name = {t.name: t for t in await default_tools()}
    assert by_name["save_note"].metadata["irreversible"] is True
    assert by_name["fail"].metadata["side_effects"] is False
    stub.responder = calls_to("fail", {"reason": "disk on fire"})

    info = await quorum.run("react", "Try the failing tool.", database=db)

    assert info.status == "completed", info.error
    assert "failed on purpose: disk on fire" in info.output
    assert [c["tool"] for c in server_calls(server_files)] == ["fail"]  # not retried


@pytest.mark.parametrize(
    ("servers", "message"),
    [
        ({"x": {"transport": "carrier-pigeon"}}, "is invalid: servers.x"),
        ({"x": {"transport": "stdio", "command": "/nonexistent/mcp"}}, "did not list its tools"),
    ],
)
async def test_a_bad_mcp_setting_is_a_clear_error(
    servers: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    configure(monkeypatch, tmp_path / f"bad-{len(message)}.json", servers)

    with pytest.raises(ConfigError, match=message):
        await default_tools()


async def test_a_declared_tool_the_server_lacks_is_named(
    server_files: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = stdio_server(server_files, tools={"multiply": {"side_effects": False}})
    configure(monkeypatch, tmp_path / "mcp.json", {"numbers": server})

    with pytest.raises(ConfigError, match="has no tool multiply .it offers: add, save_note, fail"):
        await default_tools()
