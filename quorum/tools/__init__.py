"""Agent-facing tools, grouped by domain; each module exports TOOLS.

`all_tools()` is the registry: every tool Quorum has. Agents get `default_tools()`, all of
them and the tools of the MCP servers configured in `QUORUM_MCP_CONFIG` (`quorum.tools.mcp`):
an irreversible tool (write_file, an undeclared MCP tool) waits for a person's approval before
each call (see `quorum.effects`), unless it is approved in advance. Adding a tool is one typed
function with `@agent_tool` in a module's TOOLS; a new module is added to `_MODULES` below.
"""

from __future__ import annotations

from collections.abc import Iterable

from langchain_core.tools import BaseTool

from quorum.errors import ConfigError
from quorum.tools import calculator, clock, docsearch, fetch, files, websearch
from quorum.tools.mcp import mcp_tools

_MODULES = (docsearch, websearch, fetch, files, calculator, clock)


def all_tools() -> list[BaseTool]:
    """Every registered tool, whether or not agents may be offered it."""
    return [tool for module in _MODULES for tool in module.TOOLS]


async def default_tools() -> list[BaseTool]:
    """The tools researcher and ReAct agents are offered: Quorum's and the MCP servers'."""
    own, served = all_tools(), await mcp_tools()
    clash = {t.name for t in own} & {t.name for t in served}
    if clash:
        raise ConfigError(
            f"an MCP server offers a tool named like one of Quorum's: {', '.join(sorted(clash))}",
            hint="set prefix = true for that server in QUORUM_MCP_CONFIG",
        )
    return [*own, *served]


def tools_named(names: Iterable[str]) -> list[BaseTool]:
    """The registered tools with these names, in that order, offered or not.

    For an agent that needs a narrower set than `default_tools()`, e.g. a fact-checker that
    should only consult the documents.
    """
    names = list(names)
    registry = {tool.name: tool for tool in all_tools()}
    unknown = [name for name in names if name not in registry]
    if unknown:
        raise KeyError(f"no tool named {', '.join(unknown)}; have {', '.join(sorted(registry))}")
    return [registry[name] for name in names]


async def offered(names: Iterable[str]) -> list[BaseTool]:
    """The tools with these names, Quorum's or an MCP server's, to offer an agent."""
    names = list(names)
    if not names:
        return []
    registry = {tool.name: tool for tool in await default_tools()}
    return [registry[name] for name in names if name in registry]
