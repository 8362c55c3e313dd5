"""An agent that uses tools, as a subgraph: every model turn and every tool call a step.

    brief ─> act ─(tool calls)─> tool (one task per call) ─> act ... ─(answer)─> finish

`brief` sets up the conversation from the caller's input (who acts, which tools, how many
rounds); `act` is one model turn; each tool call runs as its own `tool` task; `finish`
turns the conversation into the caller's output. The orchestrator's workers and the
pipeline's research and fact-check stages are such subgraphs; the ReAct pattern is the
same loop as a whole graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langgraph.graph import END, START
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Send

from quorum.context import QuorumContext
from quorum.graphs.pattern import AgentGraph
from quorum.nodes.tool_use import act, tool, tool_tasks
from quorum.state import ToolLoopState, ToolTask


def route_tool_calls(finish: str) -> Callable[[ToolLoopState], list[Send] | str]:
    """After a turn: one `tool` task per tool call, or `finish` when the agent answered."""

    def route_after_act(state: ToolLoopState) -> list[Send] | str:
        tasks = tool_tasks(state["messages"], state.get("tools", []), state["agent"])
        return [Send("tool", task) for task in tasks] if tasks else finish

    return route_after_act


def tool_loop(
    name: str,
    *,
    state: type[Any],
    input_schema: type[Any],
    output_schema: type[Any],
    brief: Callable[..., Any],
    finish: Callable[..., Any],
    finish_asks_model: bool = False,
) -> CompiledStateGraph[Any, QuorumContext, Any, Any]:
    """The subgraph `name`: `brief`, then act <-> tool steps, then `finish`.

    `act` is an agent step; so is `finish` when it asks the model (`finish_asks_model`).
    """
    builder = AgentGraph(
        state, context_schema=QuorumContext, input_schema=input_schema, output_schema=output_schema
    )
    builder.add_node(brief)
    builder.add_agent(act)
    builder.add_node(tool, input_schema=ToolTask)  # its Send payload, not the loop state
    if finish_asks_model:
        builder.add_agent(finish)
    else:
        builder.add_node(finish)
    builder.add_edge(START, brief.__name__)
    builder.add_edge(brief.__name__, "act")
    builder.add_conditional_edges(
        "act", route_tool_calls(finish.__name__), ["tool", finish.__name__]
    )
    builder.add_edge("tool", "act")
    builder.add_edge(finish.__name__, END)
    return builder.compile(name=name)
