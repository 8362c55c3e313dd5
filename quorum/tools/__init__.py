"""Agent-facing tools, grouped by domain; each module exports TOOLS.

`all_tools()` is the registry: every tool Quorum has, irreversible ones included. Agents get
`default_tools()`, which leaves out irreversible tools unless the `allow_irreversible_tools`
setting enables them. Adding a tool is one typed function with `@agent_tool` in a module's
TOOLS; a new module is added to `_MODULES` below.
"""

from __future__ import annotations

from collections.abc import Iterable

from langchain_core.tools import BaseTool

from quorum.tools import calculator, clock, docsearch, fetch, files, websearch
from quorum.tools.contract import may_offer

_MODULES = (docsearch, websearch, fetch, files, calculator, clock)


def all_tools() -> list[BaseTool]:
    """Every registered tool, whether or not agents may be offered it."""
    return [tool for module in _MODULES for tool in module.TOOLS]


def default_tools() -> list[BaseTool]:
    """The tools researcher and ReAct agents are offered unless told otherwise."""
    return [tool for tool in all_tools() if may_offer(tool)]


def tools_named(names: Iterable[str]) -> list[BaseTool]:
    """The registered tools with these names, in that order, offered or not.

    For an agent that needs a narrower set than `default_tools()`, e.g. a fact-checker that
    should only consult the documents. Irreversible tools still run only when enabled.
    """
    names = list(names)
    registry = {tool.name: tool for tool in all_tools()}
    unknown = [name for name in names if name not in registry]
    if unknown:
        raise KeyError(f"no tool named {', '.join(unknown)}; have {', '.join(sorted(registry))}")
    return [registry[name] for name in names]


def offered(names: Iterable[str]) -> list[BaseTool]:
    """The tools with these names that agents may be offered under the current settings."""
    return [tool for tool in tools_named(names) if may_offer(tool)]
