"""The contract every Quorum tool follows, and how agents call tools.

A tool is a typed async function whose docstring tells the model what it is for, when not to
use it and an example call. It returns a pydantic result; it fails by raising `ToolError`,
which the agent receives as a structured tool message saying whether a retry can help and
what to try instead. Tools declare their side effects, so approval and an effect ledger can
be built on the flags.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.messages import ToolCall, ToolMessage
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field, ValidationError

MAX_OUTPUT_CHARS = 4000
"""Longer tool output is cut, and the cut says so."""


class ToolError(Exception):
    """A tool failure the agent can act on."""

    def __init__(self, message: str, *, retryable: bool, suggestion: str) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.suggestion = suggestion


class ToolFailure(BaseModel):
    """What the agent sees when a tool call fails."""

    error: str = Field(description="What went wrong.")
    retryable: bool = Field(description="Whether the same call may succeed if tried again.")
    suggestion: str = Field(description="What to try instead.")


def agent_tool(
    *, side_effects: bool = False, irreversible: bool = False
) -> Callable[[Callable[..., Any]], BaseTool]:
    """Make a typed async function into a tool that declares its side effects."""

    def wrap(function: Callable[..., Any]) -> BaseTool:
        return StructuredTool.from_function(
            coroutine=function,
            name=function.__name__,
            description=function.__doc__ or "",
            metadata={"side_effects": side_effects, "irreversible": irreversible},
        )

    return wrap


def has_side_effects(tool: BaseTool) -> bool:
    """Whether `tool` changes anything outside the run."""
    return bool((tool.metadata or {}).get("side_effects"))


async def call_tool(tools: Sequence[BaseTool], call: ToolCall) -> ToolMessage:
    """Run one tool call from a model; every failure becomes a structured tool message."""
    by_name = {tool.name: tool for tool in tools}
    tool = by_name.get(call["name"])
    if tool is None:
        failure = ToolFailure(
            error=f"there is no tool named {call['name']!r}",
            retryable=False,
            suggestion=f"use one of: {', '.join(sorted(by_name)) or 'no tools are offered'}",
        )
    else:
        try:
            result = await tool.ainvoke(call["args"])
            return _message(call, _render(result), status="success")
        except ToolError as error:
            failure = ToolFailure(
                error=error.message, retryable=error.retryable, suggestion=error.suggestion
            )
        except ValidationError as error:
            failure = ToolFailure(
                error=f"invalid arguments: {error.errors(include_url=False)}",
                retryable=False,
                suggestion="call the tool again with arguments that match its schema",
            )
    return _message(call, failure.model_dump_json(), status="error")


def _render(result: Any) -> str:
    text = result.model_dump_json() if isinstance(result, BaseModel) else str(result)
    if len(text) <= MAX_OUTPUT_CHARS:
        return text
    return (
        text[:MAX_OUTPUT_CHARS]
        + f"\n[output cut at {MAX_OUTPUT_CHARS} of {len(text)} characters; "
        "ask for a narrower result to see the rest]"
    )


def _message(call: ToolCall, content: str, *, status: str) -> ToolMessage:
    return ToolMessage(
        content=content, tool_call_id=call.get("id") or "", name=call["name"], status=status
    )
