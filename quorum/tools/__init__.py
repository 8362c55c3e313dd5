"""Agent-facing tools, grouped by domain; each module exports TOOLS."""

from __future__ import annotations

from langchain_core.tools import BaseTool

from quorum.tools import calculator, clock


def default_tools() -> list[BaseTool]:
    """The tools researcher and ReAct agents are offered unless told otherwise."""
    return [*calculator.TOOLS, *clock.TOOLS]
