"""Agent-facing tools, grouped by domain; each module exports TOOLS.

`all_tools()` is the registry: every tool Quorum has. `default_tools()` adds the tools of the
MCP servers configured in `QUORUM_MCP_CONFIG` (`quorum.tools.mcp`). Each agent is offered
`tools_for(agent, context)`: least privilege. The ReAct agent, asked to act, gets them all;
every other agent (a researcher, the pipeline's research stage) only tools without side
effects, unless the run's `agent_tools` grants it others. A tool that cannot work here
(`available` in its contract: web search with no provider configured) is not offered by
default. An irreversible tool (write_file, an
undeclared MCP tool) also waits for a person's approval before each call (see
`quorum.effects`), unless it is approved in advance. Adding a tool is one typed function with
`@agent_tool` in a module's TOOLS; a new module is added to `_MODULES` below.
"""

from __future__ import annotations

from collections.abc import Iterable

from langchain_core.tools import BaseTool

from quorum.context import QuorumContext
from quorum.errors import ConfigError, UsageError
from quorum.tools import calculator, clock, docsearch, fetch, files, websearch
from quorum.tools.contract import has_side_effects, is_available
from quorum.tools.mcp import mcp_tools

# The calculator first: a 1.5B researcher offered the document search first searched it for
# "math expression" when its task was a sum, and answered that it found nothing.
_MODULES = (calculator, clock, docsearch, websearch, fetch, files)

ACTING_AGENTS = frozenset({"agent"})
"""Agents offered every tool by default: the ReAct agent is the one asked to act."""


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


async def check_grants(context: QuorumContext) -> None:
    """Refuse a run whose `agent_tools` names a tool that does not exist, before it starts."""
    for agent in context.agent_tools:
        await tools_for(agent, context)


async def tools_for(
    agent: str, context: QuorumContext, default: Iterable[str] | None = None
) -> list[BaseTool]:
    """The tools `agent` is offered in this run: its grant in `agent_tools`, else its default.

    The default is the tools named in `default` if given, else every tool for an acting
    agent and every tool without side effects for any other. Research should not be able to
    write: a small model asked to research a topic asked to write a file, and the run stopped
    for an approval nobody expected.
    """
    every = await default_tools()
    granted = context.agent_tools.get(agent)
    if granted is None:
        if default is not None:
            return tools_named(default)
        usable = [tool for tool in every if is_available(tool)]
        if agent in ACTING_AGENTS:
            return usable
        return [tool for tool in usable if not has_side_effects(tool)]
    registry = {tool.name: tool for tool in every}
    unknown = [name for name in granted if name not in registry]
    if unknown:
        raise UsageError(
            f"agent_tools grants agent '{agent}' tools that do not exist: {', '.join(unknown)}",
            hint=f"the tools: {', '.join(sorted(registry))}",
        )
    return [registry[name] for name in granted]


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
