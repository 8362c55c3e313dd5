"""ReAct: an agent reasons and acts with tools in a loop, under an explicit step limit.

    agent ─(tool calls)─> tools ─> agent ─(answer, or step limit reached)─> END

`status` says how the run ended: `answered`, or `step_limit` with the history kept.
"""

from __future__ import annotations

from typing import Annotated, Literal

from langchain_core.messages import AnyMessage
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages

from quorum.context import QuorumContext
from quorum.models import MODEL_RETRY
from quorum.nodes.react import agent, tools
from quorum.state import QuorumState


class ReactState(QuorumState, total=False):
    """State of a ReAct run; `input` is the task."""

    messages: Annotated[list[AnyMessage], add_messages]
    steps: int
    """Act steps taken (rounds of tool calls)."""
    status: Literal["running", "answered", "step_limit"]


def route_after_agent(state: ReactState) -> Literal["tools", "__end__"]:
    """Act on the agent's tool calls, or stop."""
    return "tools" if state.get("status") == "running" else "__end__"


builder = StateGraph(ReactState, context_schema=QuorumContext)
builder.add_node(agent, retry_policy=MODEL_RETRY)
builder.add_node(tools)
builder.add_edge(START, "agent")
builder.add_conditional_edges("agent", route_after_agent)
builder.add_edge("tools", "agent")

graph = builder.compile(name="react")
