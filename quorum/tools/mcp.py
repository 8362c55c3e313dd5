"""Tools from Model Context Protocol servers, offered to agents under Quorum's tool contract.

The servers are listed in a settings file (`QUORUM_MCP_CONFIG`, JSON or TOML): each is a
stdio command or a streamable HTTP URL, and each of its tools may declare what it does to the
world. A tool the file does not declare is taken as irreversible, so every call of it waits
for a person's approval like `write_file`:

    [servers.notes]
    transport = "stdio"                  # or "streamable_http" with url = "http://..."
    command = "python"
    args = ["-m", "notes_server"]
    [servers.notes.tools.search_notes]
    side_effects = false                 # reads only: runs freely, retried when it may help
    [servers.notes.tools.add_note]
    side_effects = true                  # through the effect ledger, at most once per call
    irreversible = false
    [servers.notes.tools.delete_note]
    irreversible = true                  # waits for approval (or approve = true: in advance)

langchain-mcp-adapters speaks the protocol; a session is opened per call, so a tool works
from any event loop and no server connection outlives its call. The tool list is read once
per process (restart to see a server's new tools).
"""

from __future__ import annotations

import asyncio
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from langchain_core.tools import BaseTool, StructuredTool, ToolException
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from quorum.errors import ConfigError, problems
from quorum.settings import get_settings
from quorum.tools.contract import TOOL_TIMEOUT, ToolError


class ToolPolicy(BaseModel):
    """What one MCP tool does to the world, as the operator declares it."""

    model_config = ConfigDict(extra="forbid")

    side_effects: bool = Field(
        default=True, description="Whether it changes anything outside the run."
    )
    irreversible: bool | None = Field(
        default=None,
        description="Whether what it changes cannot be undone; default: its side_effects.",
    )
    approve: bool = Field(
        default=False, description="Approved in advance: an irreversible call does not wait."
    )
    trusted: bool = Field(
        default=False,
        description="What it returns is the operator's own, not from outside (it is then not "
        "fenced as untrusted data, and reading it does not void approvals in advance).",
    )
    timeout: float = Field(default=TOOL_TIMEOUT, gt=0, description="Seconds one call may take.")


UNDECLARED = ToolPolicy(side_effects=True, irreversible=True)
"""A tool the file does not declare: it may do anything, so it waits for approval."""


class _Server(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prefix: bool = Field(default=False, description="Name its tools '<server>_<tool>'.")
    tools: dict[str, ToolPolicy] = Field(default_factory=dict)


class StdioServer(_Server):
    """An MCP server Quorum starts as a subprocess and talks to over its stdin and stdout."""

    transport: Literal["stdio"]
    command: str
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] | None = None
    cwd: str | None = None


class HttpServer(_Server):
    """An MCP server reached over streamable HTTP."""

    transport: Literal["streamable_http"]
    url: str
    headers: dict[str, str] | None = None


class McpConfig(BaseModel):
    """The MCP settings file."""

    model_config = ConfigDict(extra="forbid")

    servers: dict[str, Annotated[StdioServer | HttpServer, Field(discriminator="transport")]] = (
        Field(default_factory=dict)
    )


_CONFIG = TypeAdapter(McpConfig)
_LOADED: dict[Path, list[BaseTool]] = {}


def read_config(path: Path) -> McpConfig:
    """The MCP settings file at `path`, validated; `ConfigError` says what is wrong."""
    where = f"the MCP settings file {str(path)!r} (QUORUM_MCP_CONFIG)"
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        return _CONFIG.validate_python(data)
    except OSError as error:
        raise ConfigError(f"cannot read {where}: {error.strerror}", hint="fix the path") from None
    except (ValueError, tomllib.TOMLDecodeError) as error:
        found = problems(error) if isinstance(error, ValidationError) else str(error)
        raise ConfigError(
            f"{where} is invalid: {found}",
            hint="see the MCP section of README.md for its form",
        ) from None


async def mcp_tools() -> list[BaseTool]:
    """The tools of every configured MCP server (none without `QUORUM_MCP_CONFIG`)."""
    path = get_settings().mcp_config
    if path is None:
        return []
    if path not in _LOADED:
        # Off the event loop: `langgraph dev` refuses blocking file reads on it. Two runs
        # starting at once may both list the tools; the second listing is the same.
        config = await asyncio.to_thread(read_config, path)
        _LOADED[path] = await _load(config)
    return _LOADED[path]


async def _load(config: McpConfig) -> list[BaseTool]:
    # Imported here: the MCP client and its transports take a noticeable part of a second
    # to import, and most runs (and every CLI command that runs none) configure no server.
    from langchain_mcp_adapters.client import MultiServerMCPClient

    tools: list[BaseTool] = []
    for name, server in config.servers.items():
        connection = server.model_dump(exclude={"prefix", "tools"}, exclude_none=True)
        client = MultiServerMCPClient(
            {name: connection},  # type: ignore[dict-item]
            tool_name_prefix=server.prefix,
            handle_tool_errors=False,  # a failed call raises: it becomes a ToolError below
        )
        try:
            served = await client.get_tools(server_name=name)
        except Exception as error:  # the adapters raise whatever the transport raised
            raise ConfigError(
                f"MCP server {name!r} ({_where(server)}) did not list its tools: {_reason(error)}",
                hint="check that it starts or answers, and its entry in QUORUM_MCP_CONFIG",
            ) from error
        undeclared = set(server.tools) - {_served_name(name, server, t) for t in served}
        if undeclared:
            raise ConfigError(
                f"MCP server {name!r} has no tool {', '.join(sorted(undeclared))} "
                f"(it offers: {', '.join(t.name for t in served) or 'none'})",
                hint="fix the tool names in QUORUM_MCP_CONFIG",
            )
        clash = {t.name for t in tools} & {t.name for t in served}
        if clash:
            raise ConfigError(
                f"MCP server {name!r} offers {', '.join(sorted(clash))}, named like another "
                "server's tools",
                hint=f"set prefix = true for server {name!r} in QUORUM_MCP_CONFIG",
            )
        for tool in served:
            policy = server.tools.get(_served_name(name, server, tool), UNDECLARED)
            tools.append(_under_contract(tool, name, policy))
    return tools


def _served_name(server_name: str, server: _Server, tool: BaseTool) -> str:
    """The tool's name as its server gives it (what the settings file declares)."""
    prefix = f"{server_name}_"
    return tool.name.removeprefix(prefix) if server.prefix else tool.name


def _under_contract(tool: BaseTool, server: str, policy: ToolPolicy) -> BaseTool:
    """`tool` as a Quorum tool: declared effects, text results, failures as `ToolError`."""

    async def call(**args: Any) -> str:
        try:
            content = await tool.ainvoke(args)
        except ToolException as error:
            raise ToolError(
                f"{tool.name} (MCP server {server!r}) failed: {error}",
                retryable=False,
                suggestion="read the error, then call it again with other arguments, or use "
                "another tool",
            ) from None
        except (OSError, TimeoutError, ExceptionGroup) as error:
            raise ToolError(
                f"MCP server {server!r} could not be reached for {tool.name}: {_reason(error)}",
                retryable=True,
                suggestion="try again later, or use another tool",
            ) from None
        return _text(content)

    irreversible = policy.side_effects if policy.irreversible is None else policy.irreversible
    return StructuredTool(
        name=tool.name,
        description=tool.description,
        args_schema=tool.args_schema or {"type": "object", "properties": {}},
        coroutine=call,
        metadata={
            "side_effects": policy.side_effects or irreversible,
            "irreversible": irreversible,
            "approved": policy.approve,
            "untrusted": not policy.trusted,
            "timeout": policy.timeout,
            "mcp_server": server,
        },
    )


def _text(content: Any) -> str:
    """An MCP result's content blocks as the text the agent reads."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            block.get("text", json.dumps(block)) if isinstance(block, dict) else str(block)
            for block in content
        ]
        return "\n".join(parts)
    return json.dumps(content, default=str)


def _where(server: StdioServer | HttpServer) -> str:
    return server.url if isinstance(server, HttpServer) else server.command


def _reason(error: BaseException) -> str:
    # anyio wraps a transport's failure in an exception group: name the first real one.
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return f"{type(error).__name__}: {error}"
