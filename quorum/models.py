"""The one seam that builds and calls chat models.

Every agent gets its model from `load_chat_model(agent, context)`: langchain-openai's
ChatOpenAI against the configured OpenAI-compatible endpoint (OpenAI, vLLM, Ollama,
llama.cpp, LM Studio). Tests replace `load_chat_model` and nothing else. The `ask*` helpers
are how agents talk to a model: they record usage per agent, and `ask_structured` asks for
JSON matching a pydantic schema in the form the endpoint understands and lets the model
repair an invalid reply a bounded number of times.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, TypeVar

import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.tools import BaseTool
from langchain_openai import ChatOpenAI
from langgraph.types import RetryPolicy
from pydantic import BaseModel, ValidationError

from quorum.context import QuorumContext
from quorum.errors import ConfigError, ModelError
from quorum.settings import Settings, get_settings
from quorum.state import Usage

T = TypeVar("T", bound=BaseModel)

STRUCTURED_REPAIRS = 2
"""How many times a model may fix a reply that does not match the schema."""

REPAIR_PROMPT = (
    "Your reply was not valid JSON for the required schema:\n{error}\n"
    "Reply again with only the corrected JSON object."
)


def load_chat_model(agent: str, context: QuorumContext) -> BaseChatModel:
    """Build the chat model `agent` uses in a run with `context`."""
    settings = get_settings()
    temperature = settings.temperature if context.temperature is None else context.temperature
    return _chat_openai(settings, context.model_for(agent) or settings.model, temperature)


@lru_cache(maxsize=32)
def _chat_openai(settings: Settings, model: str, temperature: float) -> ChatOpenAI:
    # Cached so agents share one HTTP connection pool per model rather than one per call.
    if settings.base_url is None and settings.api_key is None:
        raise ConfigError(
            "no model endpoint is configured",
            hint="set QUORUM_BASE_URL to an OpenAI-compatible server, or QUORUM_API_KEY for OpenAI",
        )
    is_openai = _is_openai(settings)
    return ChatOpenAI(
        model=model,
        base_url=settings.base_url,
        # Local servers accept any key, but the client insists on one.
        api_key=settings.api_key or "not-needed",  # type: ignore[arg-type]
        temperature=temperature,
        seed=settings.seed,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
        stream_usage=True,
        # llama.cpp and other servers ignore `max_completion_tokens`, which ChatOpenAI sends
        # for `max_tokens`; the classic field is the one they honour.
        max_tokens=settings.max_output_tokens if is_openai else None,  # type: ignore[call-arg]
        extra_body=None if is_openai else {"max_tokens": settings.max_output_tokens},
    )


def _is_openai(settings: Settings) -> bool:
    return settings.base_url is None or "api.openai.com" in settings.base_url


def _structured_mode(settings: Settings) -> str:
    if settings.structured_output != "auto":
        return settings.structured_output
    return "json_schema" if _is_openai(settings) else "json_object"


def response_format(schema: type[BaseModel]) -> dict[str, Any]:
    """The `response_format` that asks the configured endpoint for JSON matching `schema`."""
    json_schema = schema.model_json_schema()
    if _structured_mode(get_settings()) == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": schema.__name__, "schema": json_schema, "strict": True},
        }
    # llama.cpp's server rejects the json_schema type but turns this schema into a grammar.
    return {"type": "json_object", "schema": json_schema}


def usage_of(agent: str, replies: Sequence[AIMessage]) -> dict[str, Usage]:
    """The usage ledger entry for `agent` after `replies`."""
    usage = Usage(calls=len(replies), input_tokens=0, output_tokens=0)
    for reply in replies:
        if reply.usage_metadata:
            usage["input_tokens"] += reply.usage_metadata["input_tokens"]
            usage["output_tokens"] += reply.usage_metadata["output_tokens"]
    return {agent: usage}


async def ask(
    agent: str,
    context: QuorumContext,
    messages: Sequence[BaseMessage],
    *,
    tools: Sequence[BaseTool] = (),
) -> tuple[AIMessage, dict[str, Usage]]:
    """One model turn for `agent`, offering `tools` when given."""
    model: Any = load_chat_model(agent, context)
    if tools:
        model = model.bind_tools(list(tools))
    reply = await _invoke(model, messages, agent)
    return reply, usage_of(agent, [reply])


async def ask_structured(
    agent: str,
    context: QuorumContext,
    messages: Sequence[BaseMessage],
    schema: type[T],
) -> tuple[T, dict[str, Usage]]:
    """Ask `agent` for a reply matching `schema`; the model may repair a bad reply."""
    model = load_chat_model(agent, context).bind(response_format=response_format(schema))
    conversation = list(messages)
    replies: list[AIMessage] = []
    for _ in range(STRUCTURED_REPAIRS + 1):
        reply = await _invoke(model, conversation, agent)
        replies.append(reply)
        try:
            return schema.model_validate_json(_json_text(reply)), usage_of(agent, replies)
        except ValidationError as error:
            conversation += [reply, HumanMessage(REPAIR_PROMPT.format(error=_brief(error)))]
    raise ModelError(
        f"agent '{agent}' gave no valid {schema.__name__} after {STRUCTURED_REPAIRS} repairs",
        hint="try a stronger model for this agent (context 'models') or a lower temperature",
    )


async def _invoke(model: Any, messages: Sequence[BaseMessage], agent: str) -> AIMessage:
    try:
        reply = await model.ainvoke(list(messages), config={"metadata": {"quorum_agent": agent}})
    except openai.AuthenticationError as error:
        raise ModelError(
            f"the model endpoint refused the API key (agent '{agent}')",
            hint="check QUORUM_API_KEY",
        ) from error
    except openai.NotFoundError as error:
        raise ModelError(
            f"the model endpoint does not know the model for agent '{agent}'",
            hint="check QUORUM_MODEL or the context's 'model' and 'models'",
        ) from error
    if not isinstance(reply, AIMessage):
        raise TypeError(f"chat model returned {type(reply).__name__}, not AIMessage")
    return reply


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def _json_text(reply: AIMessage) -> str:
    text = reply.text if isinstance(reply.content, list) else str(reply.content)
    # Some models wrap JSON in a markdown fence even when asked not to.
    fenced = _FENCE.match(text)
    return fenced.group(1) if fenced else text


def _brief(error: ValidationError) -> str:
    return json.dumps(
        [{"at": ".".join(map(str, e["loc"])), "problem": e["msg"]} for e in error.errors()]
    )


def _is_transient(error: Exception) -> bool:
    return isinstance(
        error,
        openai.APIConnectionError | openai.RateLimitError | openai.InternalServerError,
    )


MODEL_RETRY = RetryPolicy(max_attempts=3, initial_interval=1.0, retry_on=_is_transient)
"""Retry policy for agent nodes: only errors a later attempt can fix."""
