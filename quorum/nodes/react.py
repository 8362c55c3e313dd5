"""The ReAct agent: reasons, calls tools, reads their results, and answers, within a step limit.

The limit is Quorum's own (`max_steps` in the run context), checked before every model turn,
so a run that reaches it ends with status `step_limit` and its whole history, rather than
with LangGraph's recursion error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from quorum.context import QuorumContext
from quorum.models import ask
from quorum.tools import default_tools
from quorum.tools.contract import call_tool

if TYPE_CHECKING:
    from quorum.graphs.react import ReactState

REACT_PROMPT = """You solve the user's task step by step. Think about what you need, call a tool
when a fact must be looked up or computed, read its result, and repeat. When you have the
answer, reply with it directly and call no tool. A tool error says whether retrying can help
and what to try instead: follow it."""


async def agent(state: ReactState, runtime: Runtime[QuorumContext]) -> dict:
    """Reason about the task so far: call tools, or answer."""
    limit = runtime.context.max_steps
    if state.get("steps", 0) >= limit:
        return {
            "status": "step_limit",
            "output": f"Stopped: the step limit ({limit}) was reached before a final answer.",
        }
    history = list(state.get("messages", []))
    new = [] if history else [HumanMessage(state["input"])]
    reply, usage = await ask(
        "agent",
        runtime.context,
        [SystemMessage(REACT_PROMPT), *history, *new],
        tools=default_tools(),
    )
    if reply.tool_calls:
        return {"messages": [*new, reply], "status": "running", "usage": usage}
    return {"messages": [*new, reply], "status": "answered", "output": reply.text, "usage": usage}


async def tools(state: ReactState) -> dict:
    """Run the tool calls of the agent's last message; one act step."""
    last = state["messages"][-1]
    assert isinstance(last, AIMessage)
    available = default_tools()
    results = [await call_tool(available, call) for call in last.tool_calls]
    return {"messages": results, "steps": state.get("steps", 0) + 1}
