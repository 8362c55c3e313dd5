"""A turn that may act: `ask`, with native tool calls or a JSON action on servers without.

On a server without tool calls the grammar allows one action object per tool, with that
tool's argument schema, or `final_answer`; the reply comes back as an AIMessage with a tool
call, so the rest of Quorum cannot tell the two paths apart.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.tools import BaseTool

from quorum.context import QuorumContext
from quorum.errors import InvalidReply
from quorum.models import client
from quorum.models.call import _invoke
from quorum.models.client import _for_sample, _is_chat_openai
from quorum.models.endpoint import current_endpoint
from quorum.models.structured import (
    REPAIR_PROMPT,
    STRUCTURED_REPAIRS,
    T,
    _parse_json,
    _with_format,
    ask_structured,
    hollow,
)

if TYPE_CHECKING:
    # openai and langchain-openai take most of a second to import: they are loaded when the
    # first model is built, so commands that only read threads (show, threads) never pay it.
    from langchain_openai import ChatOpenAI

FINAL_ANSWER = "final_answer"
ACTION_PROMPT = """

You act by replying with one JSON action: first "thought", your reasoning about what to do
next; then "action", a tool name or "final_answer"; then "action_input", the tool's
arguments (or your answer, in full: the actual value, never a placeholder).
Tools:
{tools}
- final_answer: give the answer to the user. action_input: ["answer"]
Use a tool when a fact must be computed or looked up; after its result, give final_answer."""

RESULT_TEMPLATE = """Result of {tool}: {result}
If this answers the task, reply with the final_answer action now."""


async def ask(
    agent: str,
    context: QuorumContext,
    messages: Sequence[BaseMessage],
    *,
    tools: Sequence[BaseTool] = (),
    sample: int | None = None,
    max_tokens: int | None = None,
) -> AIMessage:
    """One model turn for `agent`, offering `tools` when given.

    `sample` numbers one of several turns sent the same prompt on purpose (see
    `ask_structured`); each gets a seed of its own. `max_tokens` caps this reply below the
    endpoint's own cap.
    """
    model: Any = await client.load_chat_model(agent, context)
    if max_tokens is not None:
        model = model.bind(max_tokens=max_tokens)
    if tools and _is_chat_openai(model) and current_endpoint().tools == "json":
        return await _ask_json_action(model, messages, tools, agent, context)
    if tools:
        model = _with_tools(model, tools)
    return await _invoke(_for_sample(model, sample), messages, agent, context)


def _with_tools(model: Any, tools: Sequence[BaseTool]) -> Any:
    """`model` offering `tools`, bound once per model, tool set and event loop.

    Binding converts every tool's argument schema to the endpoint's form: milliseconds per
    turn for Quorum's tools, spent again each time an agent took a turn.
    """
    per_loop = _BOUND.setdefault(asyncio.get_running_loop(), {})
    key = (id(model), *map(id, tools))
    if key not in per_loop:
        # The model and tools are kept with their binding, so their ids stay theirs; all
        # go with the loop, as the models do.
        per_loop[key] = (model, tuple(tools), model.bind_tools(list(tools)))
    return per_loop[key][2]


_BOUND: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[int, ...], tuple[Any, ...]]] = (
    WeakKeyDictionary()
)


REASONED_REQUEST = """Now state the outcome of your reasoning above as JSON for the schema.
Take each value from what you wrote: the actual value, never a placeholder, no JSON inside a
value."""


async def ask_reasoned(
    agent: str,
    context: QuorumContext,
    messages: Sequence[BaseMessage],
    schema: type[T],
    *,
    request: str = REASONED_REQUEST,
    json_schema: dict[str, Any] | None = None,
    sample: int | None = None,
    read: Callable[[str], T | None] | None = None,
) -> tuple[str, T]:
    """Let `agent` reason in plain text, then state the outcome as `schema`: (working, reply).

    A small model held to a grammar from its first token reasons badly: the embedded 1.5B
    model got 6 of 10 arithmetic questions right working in plain text, 0 of 10 with the same
    working inside a JSON string. So the agent first answers `messages` freely; then one short
    structured turn (`ask_structured`, with its bounded repair) states the outcome, with the
    working in view. Each turn is its own journaled call. The working is capped at the
    run's `max_reasoning_tokens`: a small model on a CPU writes a few tokens a second.

    `read`, when given, takes the reply from the working itself where the prompt asked the
    agent to end on a line plain code can read ("Answer: 279"); the structured turn is then
    not asked for. Read or asked, it is the model's own words: the structured turn was where
    a 1.5B debater's right answer turned into `{"result": 279}`.
    """
    working = await ask(
        agent, context, messages, sample=sample, max_tokens=context.max_reasoning_tokens
    )
    from_line = read(working.text) if read is not None else None
    if from_line is not None:
        return working.text, from_line
    reply = await ask_structured(
        agent,
        context,
        [*messages, AIMessage(working.text), HumanMessage(request)],
        schema,
        json_schema=json_schema,
        sample=sample,
    )
    return working.text, reply


async def _ask_json_action(
    model: ChatOpenAI,
    messages: Sequence[BaseMessage],
    tools: Sequence[BaseTool],
    agent: str,
    context: QuorumContext,
) -> AIMessage:
    """A tool-calling turn on a server without native tool calls.

    The grammar allows exactly one action object per tool, with that tool's own argument
    schema, or `final_answer`; the reply comes back as an AIMessage with a tool call, so the
    rest of Quorum cannot tell the two paths apart.
    """
    schema = _actions_schema(tools)
    described = "\n".join(
        f"- {t.name}: {_first_line(t.description)} action_input: {json.dumps(list(t.args))}"
        for t in tools
    )
    prompt = _as_plain_turns(messages)
    if prompt and isinstance(prompt[0], SystemMessage):
        prompt[0] = SystemMessage(prompt[0].text + ACTION_PROMPT.format(tools=described))
    else:
        prompt.insert(0, SystemMessage(ACTION_PROMPT.format(tools=described).strip()))
    bound = _with_format(model, schema, "Action")
    thoughts: list[str] = []
    for _ in range(STRUCTURED_REPAIRS + 1):
        raw = await _invoke(bound, prompt, agent, context, structured=True)
        try:
            action = _parse_json(raw)
            name, arguments, thought = action["action"], action["action_input"], action["thought"]
        except (ValueError, KeyError, TypeError):
            # Only a reply cut at the length limit gets here (the grammar forces the shape).
            return AIMessage(raw.text, usage_metadata=raw.usage_metadata)
        if name != FINAL_ANSWER and isinstance(arguments, dict):
            call = ToolCall(name=str(name), args=arguments, id=f"call_{uuid.uuid4().hex[:12]}")
            return AIMessage(str(thought), tool_calls=[call], usage_metadata=raw.usage_metadata)
        answer = arguments.get("answer", "") if isinstance(arguments, dict) else arguments
        thoughts.append(str(thought))
        # A small model sometimes leaves the answer empty and puts it in its thought.
        text = str(answer).strip() or str(thought)
        reason = hollow(text, "answer")
        if reason is None:
            return AIMessage(text, usage_metadata=raw.usage_metadata)
        # Each repair is its own journaled call, as in `ask_structured`.
        prompt = [*prompt, raw, HumanMessage(REPAIR_PROMPT.format(error=reason))]
    # Out of repairs, a thought that states the answer in plain text is the answer: at
    # temperature 0 a 1.5B analyst thought "The result ... is indeed 522." three times over,
    # and three times put the calculator's JSON result in the answer field. The first such
    # thought: those written after a repair message can be about the repair ("The answer
    # should be a JSON object with the value directly"), not the task.
    stated = next((thought for thought in thoughts if hollow(thought, "answer") is None), None)
    if stated is not None:
        return AIMessage(stated, usage_metadata=raw.usage_metadata)
    raise InvalidReply(
        f"agent '{agent}' gave no real final answer after {STRUCTURED_REPAIRS} repairs",
        hint="try a stronger model for this agent (context 'models') or a lower temperature",
    )


def _actions_schema(tools: Sequence[BaseTool]) -> dict[str, Any]:
    """One action object per tool, with that tool's argument schema, or `final_answer`."""
    options, definitions = [], {}
    for tool in tools:
        given: Any = tool.tool_call_schema
        # An MCP server's tool comes with a JSON schema; Quorum's own with a pydantic model.
        arguments = dict(given) if isinstance(given, dict) else given.model_json_schema()
        definitions.update(arguments.pop("$defs", {}))
        options.append(_action_schema(tool.name, arguments))
    answer = {"type": "object", "properties": {"answer": {"type": "string"}}}
    options.append(_action_schema(FINAL_ANSWER, {**answer, "required": ["answer"]}))
    return {"anyOf": options, **({"$defs": definitions} if definitions else {})}


def _action_schema(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    arguments.pop("title", None)
    arguments.pop("description", None)
    return {
        "type": "object",
        # `thought` first: a model that commits to an action (and its answer) before it has
        # reasoned fills in a guess or a placeholder ("value") and reasons afterwards.
        "properties": {
            "thought": {"type": "string"},
            "action": {"const": name},
            "action_input": arguments,
        },
        "required": ["thought", "action", "action_input"],
    }


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _as_plain_turns(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    # Servers without tool calls know no tool roles: replay calls and results as plain turns.
    turns: list[BaseMessage] = []
    for message in messages:
        if isinstance(message, AIMessage) and message.tool_calls:
            call = message.tool_calls[0]
            action = {"thought": message.text, "action": call["name"], "action_input": call["args"]}
            turns.append(AIMessage(json.dumps(action)))
        elif isinstance(message, ToolMessage):
            turns.append(
                HumanMessage(RESULT_TEMPLATE.format(tool=message.name, result=message.text))
            )
        else:
            turns.append(message)
    return turns
