"""Agent-facing tools, grouped by domain; each module exports TOOLS.

`all_tools()` is the registry: every tool Quorum has. Agents get `default_tools()`, all of
them: an irreversible tool (write_file) waits for a person's approval before each call
(see `quorum.effects`), unless it is approved in advance. Adding a tool is one typed
function with `@agent_tool` in a module's TOOLS; a new module is added to `_MODULES` below.
"""

from __future__ import annotations

from collections.abc import Iterable

from langchain_core.tools import BaseTool

from quorum.tools import calculator, clock, docsearch, fetch, files, websearch

_MODULES = (docsearch, websearch, fetch, files, calculator, clock)


def all_tools() -> list[BaseTool]:
    """Every registered tool, whether or not agents may be offered it."""
    return [tool for module in _MODULES for tool in module.TOOLS]


def default_tools() -> list[BaseTool]:
    """The tools researcher and ReAct agents are offered unless told otherwise."""
    return all_tools()


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


def offered(names: Iterable[str]) -> list[BaseTool]:
    """The tools with these names, to offer an agent."""
    return tools_named(names)
