"""ReAct: an agent reasons and acts with tools in a loop, under an explicit step limit.

    agent ─(tool calls)─> tool (one task per call) ─> agent ─(answer, or step limit)─> END

Each tool call is its own task and checkpoint. `status` says how the run ended: `answered`,
or `step_limit` with the history kept.
"""

from __future__ import annotations

from typing import Literal

from langgraph.graph import START
from langgraph.runtime import get_runtime
from langgraph.types import Send

from quorum.context import QuorumContext
from quorum.graphs.pattern import Pattern
from quorum.nodes.react import agent
from quorum.nodes.tool_use import tool, tool_tasks
from quorum.state import ReactInput, ReactOutput, ReactState, ToolTask
from quorum.tools import tools_for


async def route_after_agent(state: ReactState) -> list[Send] | Literal["__end__"]:
    """One `tool` task per tool call of the agent's turn, or stop."""
    if state.get("status") != "running":
        return "__end__"
    names = [t.name for t in await tools_for("agent", get_runtime(QuorumContext).context)]
    return [Send("tool", task) for task in tool_tasks(state["messages"], names, "agent")]


builder = Pattern("react", ReactState, input_schema=ReactInput, output_schema=ReactOutput)
builder.add_agent(agent)
builder.add_node(tool, input_schema=ToolTask)  # its Send payload, not the graph state
builder.add_edge(START, "agent")
builder.add_conditional_edges("agent", route_after_agent, ["tool", "__end__"])
builder.add_edge("tool", "agent")

graph = builder.compile()
