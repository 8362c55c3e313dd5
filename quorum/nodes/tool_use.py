"""An agent's bounded turn with tools: call tools, read their results, then answer.

The researcher worker and the pipeline's research and fact-check stages gather facts this
way before they answer; the ReAct pattern does the same as a graph loop instead, so each of
its steps is its own checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.tools import BaseTool
from pydantic import BaseModel

from quorum.context import QuorumContext
from quorum.models import ask, ask_structured
from quorum.state import Usage, add_usage
from quorum.tools.contract import call_tool

T = TypeVar("T", bound=BaseModel)


async def use_tools(
    agent: str,
    context: QuorumContext,
    messages: Sequence[BaseMessage],
    tools: Sequence[BaseTool],
) -> tuple[list[BaseMessage], AIMessage, dict[str, Usage]]:
    """Let `agent` call `tools` for at most `context.max_tool_calls` rounds, then answer.

    Returns the conversation (tool calls and results included), the final answer, and the
    usage of every model call made.
    """
    conversation = list(messages)
    usage: dict[str, Usage] = {}
    for calls_left in range(context.max_tool_calls, -1, -1):
        # On the last turn no tools are offered, so the agent must answer.
        reply, spent = await ask(agent, context, conversation, tools=tools if calls_left else ())
        usage = add_usage(usage, spent)
        if not reply.tool_calls:
            return conversation, reply, usage
        conversation.append(reply)
        conversation += [await call_tool(tools, call) for call in reply.tool_calls]
    raise AssertionError("unreachable: the last turn offers no tools")


async def use_tools_then_answer(
    agent: str,
    context: QuorumContext,
    messages: Sequence[BaseMessage],
    tools: Sequence[BaseTool],
    request: str,
    schema: type[T],
) -> tuple[T, dict[str, Usage]]:
    """Gather with `tools` as in `use_tools`, then answer `request` as a `schema` instance."""
    conversation, reply, gathered = await use_tools(agent, context, messages, tools)
    answer, usage = await ask_structured(
        agent, context, [*conversation, reply, HumanMessage(request)], schema
    )
    return answer, add_usage(gathered, usage)
