"""The ReAct agent: reasons, calls tools, reads their results, and answers, within a step limit.

The limit is Quorum's own (`max_steps` in the run context), checked before every model turn,
so a run that reaches it ends with status `step_limit` and its whole history, rather than
with LangGraph's recursion error. Its tool calls run as `tool` steps (`quorum.nodes.tool_use`).
"""

from __future__ import annotations

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from quorum.answers import said_once
from quorum.context import QuorumContext
from quorum.models import ask
from quorum.nodes.tool_use import tool_rounds
from quorum.state import ReactState
from quorum.tools import tools_for

REACT_PROMPT = """You solve the user's task step by step. Think about what you need, call a tool
when a fact must be looked up or computed, read its result, and repeat. When you have the
answer, reply with it directly and call no tool. A tool error says whether retrying can help
and what to try instead: follow it."""


async def agent(state: ReactState, runtime: Runtime[QuorumContext]) -> dict:
    """Reason about the task so far: call tools, or answer."""
    limit = runtime.context.max_steps
    history = list(state.get("messages", []))
    steps = tool_rounds(history)
    if steps >= limit:
        return {
            "steps": steps,
            "status": "step_limit",
            "output": f"Stopped: the step limit ({limit}) was reached before a final answer.",
        }
    new = [] if history else [HumanMessage(state["input"])]
    reply = await ask(
        "agent",
        runtime.context,
        [SystemMessage(REACT_PROMPT), *history, *new],
        tools=await tools_for("agent", runtime.context),
    )
    if reply.tool_calls:
        return {"messages": [*new, reply], "steps": steps, "status": "running"}
    answer = said_once(reply.text)
    return {"messages": [*new, reply], "steps": steps, "status": "answered", "output": answer}
