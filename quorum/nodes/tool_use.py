"""Tool use as graph steps: an agent's model turn is one step, each tool call another.

`act` is one model turn of an agent that may call tools; `tool` runs one tool call, sent to
it as its own task. Every pattern whose agents use tools (the ReAct agent, the researcher
worker, the pipeline's research and fact-check stages) runs them through these steps, so
each tool call is checkpointed on its own: a crash or a failed model call never runs a
finished tool call again, and an approval can pause between any two steps.
"""

from __future__ import annotations

from langchain_core.messages import AIMessage, AnyMessage
from langgraph.runtime import Runtime

from quorum.context import QuorumContext
from quorum.errors import ModelError
from quorum.models import ask
from quorum.state import ToolLoopState, ToolTask
from quorum.tools import offered
from quorum.tools.contract import call_tool, untrusted_sources


def tool_rounds(messages: list[AnyMessage]) -> int:
    """Rounds of tool calls in a conversation so far."""
    return sum(1 for m in messages if isinstance(m, AIMessage) and m.tool_calls)


def without_tool_calls(agent: str, reply: AIMessage) -> AIMessage:
    """A reply to a turn that offered no tools: its text is the answer, its calls never run."""
    if not reply.tool_calls:
        return reply
    if not reply.text.strip():
        raise ModelError(
            f"agent '{agent}' asked for tools ({', '.join(c['name'] for c in reply.tool_calls)})"
            " on its final turn, where none are offered, and gave no answer",
            hint="use a model that follows tool-use instructions, or raise max_tool_calls",
        )
    return AIMessage(reply.text, id=reply.id, usage_metadata=reply.usage_metadata)


async def act(state: ToolLoopState, runtime: Runtime[QuorumContext]) -> dict:
    """One model turn: call tools (while rounds are left), or answer."""
    agent, messages = state["agent"], state["messages"]
    names = state.get("tools", []) if tool_rounds(messages) < state["max_rounds"] else []
    tools = await offered(names)
    reply = await ask(agent, runtime.context, messages, tools=tools)
    if not tools:
        reply = without_tool_calls(agent, reply)
    return {"messages": [reply]}


async def tool(state: ToolTask, runtime: Runtime[QuorumContext]) -> dict:
    """Run one tool call of the agent's last turn; a tool the agent was not offered fails.

    An irreversible call first waits for a person's approval, unless approved in advance.
    """
    message = await call_tool(
        await offered(state["tools"]),
        state["call"],
        agent=state["agent"],
        approve_tools=runtime.context.approve_tools,
        tainted=state.get("tainted", []),
    )
    return {"messages": [message]}


def tool_tasks(messages: list[AnyMessage], tools: list[str], agent: str) -> list[ToolTask]:
    """One task per tool call of the last message, if it has any.

    Each carries the sources of the untrusted data the agent had read by then (spotlighted,
    `quorum.tools.contract.spotlight`: tool results, and inputs from steps that had read
    some): the taint of its context.
    """
    last = messages[-1]
    if not isinstance(last, AIMessage):
        return []
    tainted = sorted({source for m in messages for source in untrusted_sources(m)})
    return [
        ToolTask(call=call, tools=tools, agent=agent, tainted=tainted) for call in last.tool_calls
    ]
