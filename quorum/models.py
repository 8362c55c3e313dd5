"""The one seam that builds and calls chat models.

Every agent gets its model from `load_chat_model(agent, context)`: langchain-openai's
ChatOpenAI against the configured OpenAI-compatible endpoint (OpenAI, vLLM, Ollama,
llama.cpp, LM Studio), or against the embedded local model when none is configured. Tests
replace `load_chat_model` and nothing else (`quorum.testing`). The `ask*` helpers are how
agents talk to a model; `ask_structured` asks for JSON matching a pydantic schema in the form
the endpoint understands and lets the model repair an invalid reply a bounded number of
times; `ask` with tools uses native tool calls, or a grammar-constrained JSON action on
servers without them.

Every request goes through `_invoke`, the one place that:
- replays a reply the journal already has (`quorum.journal`), and records a new one before
  the caller sees it;
- retries what a later attempt can fix (429, 5xx, timeouts, dropped connections, malformed
  bodies) with exponential backoff and jitter, honouring Retry-After, for at most
  `max_attempts` requests per call; the client's own retries are off, and no graph node has a
  retry policy, so nothing else retries a model call;
- turns every other failure into a `ModelError` that says what to change, with the
  endpoint's words redacted of every configured secret;
- meters the call for its agent (`quorum.metering`);
- waits for the endpoint's rate limiter and a free request slot before each request
  (`QUORUM_REQUESTS_PER_SECOND`, `QUORUM_MAX_CONCURRENT_REQUESTS`): one limiter per endpoint,
  shared by every agent and parallel worker, so a wide plan does not trip a provider's 429s.
- traces it as a model-call span (`quorum.telemetry`), when tracing is on.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import random
import re
import sys
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeGuard, TypeVar
from weakref import WeakKeyDictionary

import httpx2
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.rate_limiters import InMemoryRateLimiter
from langchain_core.tools import BaseTool
from pydantic import BaseModel, SecretStr, ValidationError

from quorum import embedded, journal, metering, model_files, telemetry
from quorum.context import QuorumContext
from quorum.errors import ConfigError, InvalidReply, ModelError, UsageError
from quorum.settings import Settings, get_settings, redact

if TYPE_CHECKING:
    # openai and langchain-openai take most of a second to import: they are loaded when the
    # first model is built, so commands that only read threads (show, threads) never pay it.
    import openai
    from langchain_openai import ChatOpenAI

T = TypeVar("T", bound=BaseModel)

STRUCTURED_REPAIRS = 2
"""How many times a model may fix a reply that does not match the schema."""

REPAIR_PROMPT = (
    "Your reply was not valid JSON for the required schema:\n{error}\n"
    "Reply again with only the corrected JSON object."
)

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

# Grammar bounds for the embedded model (see `_for_grammar`).
MAX_STRING = 160
MAX_ITEMS = 4
MAX_GRAMMAR_STRING = 256
"""The longest length bound sent to any grammar-constrained server."""
NUMBER_STEPS = 20
"""A bounded number is asked for as one of this many steps (plus one) across its range."""


@dataclass(frozen=True)
class Endpoint:
    """What kind of server a run's models are on, and what it supports."""

    embedded: bool
    structured: Literal["json_schema", "json_object"]
    tools: Literal["native", "json"]
    max_tokens: int
    timeout: float
    """Seconds per request."""
    short_strings: bool = False
    """Its model needs short bounds on every string of a structured reply (see `_for_grammar`)."""


def endpoint(settings: Settings) -> Endpoint:
    """The kind of endpoint the settings name: the embedded model when they name none."""
    is_embedded = settings.base_url is None and settings.api_key is None
    is_openai = not is_embedded and (
        settings.base_url is None or "api.openai.com" in settings.base_url
    )
    structured, tools = settings.structured_output, settings.tool_calling
    return Endpoint(
        embedded=is_embedded,
        structured=(
            structured if structured != "auto" else "json_schema" if is_openai else "json_object"
        ),
        tools=tools if tools != "auto" else "json" if is_embedded else "native",
        max_tokens=(
            settings.embedded_max_output_tokens
            if is_embedded and "max_output_tokens" not in settings.model_fields_set
            else settings.max_output_tokens
        ),
        # The embedded model answers one request at a time at a few tokens per second on a
        # small CPU: parallel workers' requests wait in its queue for minutes, not seconds.
        timeout=(
            settings.embedded_timeout
            if is_embedded and "timeout" not in settings.model_fields_set
            else settings.timeout
        ),
        short_strings=(
            is_embedded
            and settings.embedded_model_path is None
            and model_files.MODELS[settings.embedded_model].short_strings
        ),
    )


async def load_chat_model(agent: str, context: QuorumContext) -> BaseChatModel:
    """Build (or reuse) the chat model `agent` uses in a run with `context`."""
    settings = get_settings()
    temperature = settings.temperature if context.temperature is None else context.temperature
    name = context.model_for(agent)
    # One client per model and event loop: agents share its connection pool, and a client
    # never outlives the loop its connections belong to (each asyncio.run has its own).
    per_loop = _MODELS.setdefault(asyncio.get_running_loop(), {})
    key = (settings, name, temperature)
    if key not in per_loop:
        base_url = settings.base_url
        if endpoint(settings).embedded:
            # Finding or starting the server blocks (files, sockets, a process): keep it off
            # the event loop, which `langgraph dev` rightly refuses to let block.
            base_url = (await asyncio.to_thread(embedded.ensure_server, settings)).base_url
        per_loop[key] = _chat_openai(settings, name, temperature, base_url)
    return per_loop[key]


_MODELS: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, ChatOpenAI]] = WeakKeyDictionary()


def _chat_openai(
    settings: Settings, model: str, temperature: float, base_url: str | None
) -> ChatOpenAI:
    import openai
    from langchain_openai import ChatOpenAI

    target = endpoint(settings)
    is_openai = target.structured == "json_schema"
    return ChatOpenAI(
        model=embedded.model_alias(settings) if target.embedded else model or settings.model,
        base_url=base_url,
        # Local servers accept any key, but the client insists on one.
        api_key=settings.api_key or SecretStr("not-needed"),
        temperature=temperature,
        seed=settings.seed,
        timeout=target.timeout,
        # Retries happen in `_invoke`, once per call, each attempt journaled: never here too.
        max_retries=0,
        # Quorum builds both clients itself, with the installed openai's own client types:
        # each model gets connections of its own (never a process-wide client bound to the
        # first event loop that used it), and every error body passes the redacting transport.
        http_client=openai.DefaultHttpxClient(
            timeout=target.timeout, transport=RedactingTransport(httpx2.HTTPTransport())
        ),
        http_async_client=openai.DefaultAsyncHttpxClient(
            timeout=target.timeout, transport=AsyncRedactingTransport(httpx2.AsyncHTTPTransport())
        ),
        stream_usage=True,
        # llama.cpp and other servers ignore `max_completion_tokens`, which ChatOpenAI sends
        # for `max_tokens`; the classic field is the one they honour.
        max_tokens=target.max_tokens if is_openai else None,  # type: ignore[call-arg]
        extra_body=None if is_openai else {"max_tokens": target.max_tokens},
        metadata={"quorum_endpoint": "embedded" if target.embedded else "configured"},
    )


def _redacted(request: httpx2.Request, response: httpx2.Response, body: bytes) -> httpx2.Response:
    """`response` to `request` again with `body`, its configured secrets hidden."""
    cleaned = redact(body.decode("utf-8", "replace")).encode()
    headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-length"]
    return httpx2.Response(response.status_code, headers=headers, content=cleaned, request=request)


class RedactingTransport(httpx2.BaseTransport):
    """Hides configured secrets in error bodies before anything reads them.

    Some endpoints echo the request's key in an error. Rewritten here, at the transport,
    the secret never reaches an exception, a checkpoint, a log line or a trace.
    """

    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send `request`; an error reply comes back with its body redacted."""
        response = self.inner.handle_request(request)
        if response.status_code < 400:
            return response
        body = response.read()
        response.close()
        return _redacted(request, response, body)

    def close(self) -> None:
        """Close the wrapped transport."""
        self.inner.close()


class AsyncRedactingTransport(httpx2.AsyncBaseTransport):
    """`RedactingTransport` for the async client, which every agent's call goes through."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send `request`; an error reply comes back with its body redacted."""
        response = await self.inner.handle_async_request(request)
        if response.status_code < 400:
            return response
        body = await response.aread()
        await response.aclose()
        return _redacted(request, response, body)

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self.inner.aclose()


def current_endpoint() -> Endpoint:
    """The endpoint of this process's settings."""
    return endpoint(get_settings())


def response_format(schema: type[BaseModel] | dict[str, Any], name: str) -> dict[str, Any]:
    """The `response_format` asking the current endpoint for JSON matching `schema`.

    Remembered for the last few schemas: a planner's grammar schema takes tens of
    milliseconds to fit at 50 plan steps, and it is the same on every call. The result is
    shared: read it, never change it.
    """
    target = current_endpoint()
    key = (id(schema), name, target)
    hit = _FORMATS.get(key)
    if hit is not None and hit[0] is schema:  # the schema is held, so its id is still its own
        _FORMATS.move_to_end(key)
        return hit[1]
    format_ = _response_format(schema, name, target)
    _FORMATS[key] = (schema, format_)
    if len(_FORMATS) > 64:
        _FORMATS.popitem(last=False)
    return format_


_FORMATS: OrderedDict[tuple[int, str, Endpoint], tuple[Any, dict[str, Any]]] = OrderedDict()


def _response_format(
    schema: type[BaseModel] | dict[str, Any], name: str, target: Endpoint
) -> dict[str, Any]:
    json_schema = schema if isinstance(schema, dict) else schema.model_json_schema()
    if target.structured == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": json_schema, "strict": True},
        }
    # llama.cpp's server rejects the json_schema type but turns this schema into a grammar.
    return {"type": "json_object", "schema": _for_grammar(json_schema, small=target.short_strings)}


def _is_chat_openai(model: Any) -> TypeGuard[ChatOpenAI]:
    """Whether `model` is langchain-openai's ChatOpenAI.

    Asked without importing it: no ChatOpenAI can exist before it is imported.
    """
    loaded = sys.modules.get("langchain_openai")
    return loaded is not None and isinstance(model, loaded.ChatOpenAI)


def _with_format(model: BaseChatModel, schema: type[BaseModel] | dict[str, Any], name: str) -> Any:
    """`model` asked for JSON matching `schema`."""
    format_ = response_format(schema, name)
    if _is_chat_openai(model):
        # Sent in the request body, not as ChatOpenAI's `response_format`: that switches it to
        # the client's parse path, which raises on a reply cut at the length limit instead of
        # returning it (the repair loop handles those) and rejects llama.cpp's schema form.
        return model.bind(extra_body={**(model.extra_body or {}), "response_format": format_})
    return model.bind(response_format=format_)


def _for_grammar(node: Any, *, small: bool) -> Any:
    """`node` made fit for a grammar-constrained server (llama.cpp's json_object).

    llama.cpp unrolls every length bound into nested rules, and a grammar with a few long
    bounds (a tool's 2,048-character URL) exceeds its limits and kills the server: long
    bounds are dropped (pydantic still checks them). A `small` model also gets short bounds
    everywhere, since it can otherwise fill one string until it runs out of tokens and leave
    the JSON unfinished.
    """
    if isinstance(node, list):
        return [_for_grammar(item, small=small) for item in node]
    if not isinstance(node, dict):
        return node
    fitted = {key: _for_grammar(value, small=small) for key, value in node.items()}
    if fitted.get("type") == "string" and not {"enum", "const", "pattern"} & set(fitted):
        longest = fitted.pop("maxLength", None)
        if small:
            fitted["maxLength"] = min(longest or MAX_STRING, MAX_STRING)
        elif longest is not None and longest <= MAX_GRAMMAR_STRING:
            fitted["maxLength"] = longest
    if fitted.get("type") == "array" and small:
        fitted.setdefault("maxItems", MAX_ITEMS)
    if fitted.get("type") in ("number", "integer") and "enum" not in fitted:
        fitted = _bounded_number(fitted)
    if fitted.get("type") == "object" and "properties" in fitted:
        # llama.cpp lets any extra key into an object unless told not to.
        fitted.setdefault("additionalProperties", False)
    return fitted


def _bounded_number(node: dict[str, Any]) -> dict[str, Any]:
    """A number with both bounds, asked for as one of its range's steps.

    llama.cpp's grammars ignore `minimum` and `maximum`, and a model then writes a confidence
    of 85 or 1e15 where 0 to 1 is asked, the same on every repair: an `enum` of values in
    range is a grammar it must follow. Unbounded numbers stay as they are.
    """
    low, high = node.get("minimum"), node.get("maximum")
    if low is None or high is None or high < low:
        return node
    if node["type"] == "integer":
        if high - low > NUMBER_STEPS * 5:
            return node
        values: list[float] = list(range(int(low), int(high) + 1))
    else:
        steps = range(NUMBER_STEPS + 1)
        values = sorted({round(low + (high - low) * i / NUMBER_STEPS, 6) for i in steps})
    return {key: value for key, value in node.items() if key != "type"} | {"enum": values}


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
    model: Any = await load_chat_model(agent, context)
    if max_tokens is not None:
        model = model.bind(max_tokens=max_tokens)
    if tools and _is_chat_openai(model) and current_endpoint().tools == "json":
        return await _ask_json_action(model, messages, tools, agent, context)
    if tools:
        model = _with_tools(model, tools)
    return await _invoke(_for_sample(model, sample), messages, agent, context)


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample `index` drawn with the run's `seed`: its own, and the same every run.

    Samples sent with one seed are one sample, k times over: a seeded server returns the
    same text to the same prompt.
    """
    digest = hashlib.sha256(f"{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _for_sample(model: Any, sample: int | None) -> Any:
    """`model` with the seed of sample `sample` bound, when the run is seeded and sampling."""
    seed = get_settings().seed
    if sample is None or seed is None:
        return model
    # Bound, so the journal's request digest tells the samples apart too.
    return model.bind(seed=sample_seed(seed, sample))


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


async def ask_structured(
    agent: str,
    context: QuorumContext,
    messages: Sequence[BaseMessage],
    schema: type[T],
    *,
    json_schema: dict[str, Any] | None = None,
    sample: int | None = None,
) -> T:
    """Ask `agent` for a reply matching `schema`; the model may repair a bad reply.

    `json_schema`, when given, is what the endpoint is asked for instead of `schema`'s own:
    a narrower form (say, an enum of the names allowed in this run) that steers the model,
    while `schema` still validates the reply. `sample` numbers one of several calls sent the
    same prompt on purpose (self-consistency): each gets a seed of its own (`sample_seed`).
    """
    model = _for_sample(await load_chat_model(agent, context), sample)
    model = _with_format(model, json_schema or schema, schema.__name__)
    conversation = list(messages)
    for _ in range(STRUCTURED_REPAIRS + 1):
        # Each repair is its own journaled call: a crash mid-repair replays the ones before.
        reply = await _invoke(model, conversation, agent, context, structured=True)
        try:
            parsed = _parse_json(reply)
            validated = schema.model_validate(parsed)
            hollow = hollow_fields(parsed, schema)
            if hollow:
                raise ValueError("; ".join(hollow))
            return validated
        except ValueError as error:  # invalid JSON, a ValidationError, or a hollow field
            conversation += [reply, HumanMessage(REPAIR_PROMPT.format(error=_brief(error)))]
    raise InvalidReply(
        f"agent '{agent}' gave no valid {schema.__name__} after {STRUCTURED_REPAIRS} repairs",
        hint="try a stronger model for this agent (context 'models') or a lower temperature",
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
) -> tuple[str, T]:
    """Let `agent` reason in plain text, then state the outcome as `schema`: (working, reply).

    A small model held to a grammar from its first token reasons badly: the embedded 1.5B
    model got 6 of 10 arithmetic questions right working in plain text, 0 of 10 with the same
    working inside a JSON string. So the agent first answers `messages` freely; then one short
    structured turn (`ask_structured`, with its bounded repair) states the outcome, with the
    working in view. Each turn is its own journaled call. The working is capped at the
    run's `max_reasoning_tokens`: a small model on a CPU writes a few tokens a second.
    """
    working = await ask(
        agent, context, messages, sample=sample, max_tokens=context.max_reasoning_tokens
    )
    reply = await ask_structured(
        agent,
        context,
        [*messages, AIMessage(working.text), HumanMessage(request)],
        schema,
        json_schema=json_schema,
        sample=sample,
    )
    return working.text, reply


PLACEHOLDERS = frozenset(
    {"value", "string", "text", "answer", "your answer", "the answer", "final answer",
     "placeholder", "todo", "tbd", "xxx", "...", "…", "<answer>", "[answer]", "{answer}"}
)  # fmt: skip
"""Words a model writes where a real value belongs when it copies the form, not fills it."""

_JSON_PUNCTUATION = frozenset('{}[]":,')


def hollow(value: str, name: str = "", description: str = "") -> str | None:
    """Why the text `value`, given for field `name`, holds no real value; None when it does.

    A small model under a grammar can produce a reply that parses and validates but says
    nothing: an empty string, a placeholder ("value"), stray JSON punctuation ("}"), an echo
    of the field's name or description, or a nested copy of the whole reply. Each is as wrong
    as invalid JSON, and goes to the same bounded repair with the reason.
    """
    text = value.strip()
    folded = text.casefold().replace("_", " ").strip(" .")
    if not text:
        return f"'{name}' is empty: write the actual value"
    if set(text) <= _JSON_PUNCTUATION:
        return f"'{name}' is only JSON punctuation ({text!r}): write the actual value"
    if folded in PLACEHOLDERS or (name and folded == name.casefold().replace("_", " ")):
        return f"'{name}' is a placeholder ({text!r}): write the actual value, not a stand-in"
    if description and folded == description.casefold().strip(" ."):
        return f"'{name}' repeats the field's description: write the actual value"
    if text[:1] in "{[" and text[-1:] in "}]":
        try:
            json.loads(text)
        except ValueError:
            pass
        else:
            return f"'{name}' holds JSON ({_shorten(text)}): write only the value itself"
    if name and re.search(r'"\w+"\s*:', text) and text.count('":') >= 2:
        return f"'{name}' holds a copy of the JSON reply: write only the value itself"
    return None


def hollow_fields(reply: Any, schema: type[BaseModel]) -> list[str]:
    """Why each string of `reply` (a parsed reply valid for `schema`) holds no real value."""
    found: list[str] = []

    def visit(value: Any, name: str, description: str) -> None:
        if isinstance(value, str):
            reason = hollow(value, name, description)
            if reason is not None:
                found.append(reason)
        elif isinstance(value, list):
            for item in value:
                visit(item, name, "")
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(item, str(key), "")

    if isinstance(reply, dict):
        for key, value in reply.items():
            field = schema.model_fields.get(key)
            visit(value, key, (field.description or "") if field else "")
    return found


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
    options, definitions = [], {}
    for tool in tools:
        given: Any = tool.tool_call_schema
        # An MCP server's tool comes with a JSON schema; Quorum's own with a pydantic model.
        arguments = dict(given) if isinstance(given, dict) else given.model_json_schema()
        definitions.update(arguments.pop("$defs", {}))
        options.append(_action_schema(tool.name, arguments))
    options.append(
        _action_schema(
            FINAL_ANSWER,
            {
                "type": "object",
                "properties": {"answer": {"type": "string"}},
                "required": ["answer"],
            },
        )
    )
    schema: dict[str, Any] = {"anyOf": options, **({"$defs": definitions} if definitions else {})}
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
        # A small model sometimes leaves the answer empty and puts it in its thought.
        text = str(answer).strip() or str(thought)
        reason = hollow(text, "answer")
        if reason is None:
            return AIMessage(text, usage_metadata=raw.usage_metadata)
        # Each repair is its own journaled call, as in `ask_structured`.
        prompt = [*prompt, raw, HumanMessage(REPAIR_PROMPT.format(error=reason))]
    raise InvalidReply(
        f"agent '{agent}' gave no real final answer after {STRUCTURED_REPAIRS} repairs",
        hint="try a stronger model for this agent (context 'models') or a lower temperature",
    )


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


async def preflight(context: QuorumContext) -> None:
    """Fail within seconds, naming the setting to change, if the endpoint cannot serve a run.

    Checks that the endpoint answers, accepts the key and knows every model the run's
    context names. The embedded model is started here when it is the endpoint.
    """
    agents = {"": context.model, **context.models}
    models = {agent: await load_chat_model(agent, context) for agent in agents}
    clients = {m.root_async_client for m in models.values() if _is_chat_openai(m)}
    if not clients:
        return  # not an OpenAI-compatible client (a test double, or a custom seam)
    import openai  # loaded with the clients

    settings = get_settings()
    where = settings.base_url or "the OpenAI API"
    client = next(iter(clients)).with_options(timeout=5.0, max_retries=0)
    try:
        served = {model.id async for model in client.models.list()}
    except openai.AuthenticationError as error:
        raise ModelError(
            f"the model endpoint {where} refused the API key", hint="check QUORUM_API_KEY"
        ) from error
    except openai.APITimeoutError:
        # Connected but slow: a busy server (a single-slot llama.cpp still finishing a dead
        # run's request) is not an unreachable one. The run's calls wait and retry.
        return
    except openai.APIConnectionError as error:
        raise ConfigError(
            f"cannot reach the model endpoint {where}",
            hint="check QUORUM_BASE_URL and that the server is running",
        ) from error
    except openai.APIStatusError:
        return  # some servers do not list models; the first call will tell
    for agent, model in models.items():
        name = getattr(model, "model_name", "")
        if served and name not in served:
            who = f"agent '{agent}'" if agent else "the default model"
            # A model name is the run's input (--model, --set models=...): bad input, exit 2.
            raise UsageError(
                f"the model endpoint {where} has no model {name!r} (for {who}); "
                f"it serves: {', '.join(sorted(served)[:10])}",
                hint="check QUORUM_MODEL or the context's 'model' and 'models'",
            )


async def _invoke(
    model: Any,
    messages: Sequence[BaseMessage],
    agent: str,
    context: QuorumContext,
    *,
    structured: bool = False,
) -> AIMessage:
    """One model call: replayed from the journal, or requested within budget and retries.

    `structured` marks a call whose reply is JSON for a schema (not prose a person reads): a
    stream of the run's messages says so in each message's metadata (`quorum_structured`).
    """
    name = journal.model_name(model)
    metadata = {"quorum_agent": agent, "quorum_structured": structured}
    with telemetry.model_span(agent, name) as span:
        entry = journal.entry_for(agent, model, messages)
        record = (await entry.read() if entry else None) or journal.CallRecord(
            agent=agent, model=name
        )
        replayed = record.reply is not None and not record.rejected
        meter = None
        if not replayed:
            record.rejected = False
            meter = (
                await metering.run_meter(entry.store, entry.thread_id, entry.run) if entry else None
            )
            held = None
            if meter is not None:
                estimate = metering.estimate_tokens(messages)
                cost = metering.cost_usd(get_settings(), name, estimate, 0)
                held = meter.reserve(agent, context, estimate=estimate, cost=cost)
            answered = None
            try:
                record = answered = await _request(model, messages, record, entry, meter, metadata)
            finally:
                if meter is not None and held is not None:
                    meter.settle(held, answered)
        if span is not None:
            left = meter.left(agent, context) if meter is not None else {}
            telemetry.ended_model_call(span, record, replayed=replayed, left=left)
        if meter is not None:
            # Over budget now: stop here. The reply is journaled, so a resume with a larger
            # budget gets it back without paying for it again.
            meter.check(agent, context)
    metering.record(agent, record)
    if entry is not None:
        journal.used(entry, record)
    assert record.reply is not None
    if replayed:
        await _show_replayed(record.reply, messages, metadata)
    return record.reply


class _Replayed(BaseChatModel):
    """Hands back a reply the journal already holds, through the run's callbacks.

    A run's message stream (LangGraph's `messages` mode: the CLI, Studio, langgraph-sdk)
    hears of every model call through LangChain's callbacks; a replayed reply makes no
    request, so this stands in for the model to show it, whole and once.
    """

    reply: AIMessage

    @property
    def _llm_type(self) -> str:
        return "quorum-journal"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self.reply)])


async def _show_replayed(
    reply: AIMessage, messages: Sequence[BaseMessage], metadata: dict[str, Any]
) -> None:
    """Tell the run's callbacks of a reply replayed from the journal, marked as replayed."""
    # Without its usage: what a replay shows is never counted again (LangSmith sums usage).
    shown = reply.model_copy(update={"usage_metadata": None})
    await _Replayed(reply=shown).ainvoke(
        list(messages),
        config={
            "run_name": metadata["quorum_agent"],
            "metadata": {**metadata, "quorum_replayed": True},
            "tags": ["quorum:replayed"],
        },
    )


async def _request(
    model: Any,
    messages: Sequence[BaseMessage],
    record: journal.CallRecord,
    entry: journal.JournalEntry | None,
    meter: metering.RunMeter | None,
    metadata: dict[str, Any],
) -> journal.CallRecord:
    settings = get_settings()
    agent = record.agent
    for attempt in range(1, settings.max_attempts + 1):
        started = time.monotonic()
        record.started_at = time.time()  # wall clock: a report lays calls out on a time axis
        record.attempts += 1
        try:
            # Named by its agent in LangSmith, not by its class (ChatOpenAI). A run streamed
            # with LangGraph's `messages` mode has a streaming callback here: ChatOpenAI then
            # streams the reply (its usage comes in the stream's last chunk) and the tokens
            # reach the stream as they arrive; the reply is whole, as ever, when this returns.
            async with _request_slot(settings):
                reply = await model.ainvoke(
                    list(messages), config={"run_name": agent, "metadata": metadata}
                )
        except Exception as error:
            failure, wait = _classify(error, agent, attempt, settings)
            record.errors.append(failure.message)
            if entry is not None:
                await entry.write(record)
            if wait is None or attempt == settings.max_attempts:
                telemetry.gave_up(record.attempts, record.errors)
                if wait is not None:
                    failure = ModelError(
                        f"{failure.message} ({attempt} attempts)", hint=failure.hint
                    )
                raise failure from None  # the endpoint's error, redacted, is in the message
            await asyncio.sleep(wait)
            continue
        if not isinstance(reply, AIMessage):
            raise TypeError(f"chat model returned {type(reply).__name__}, not AIMessage")
        usage: dict[str, Any] = dict(reply.usage_metadata or {})
        if not usage:
            # An endpoint that reports no usage (some servers leave it out of a streamed
            # reply): counted roughly, never as free, so budgets still hold.
            usage = {
                "input_tokens": metering.estimate_tokens(messages),
                "output_tokens": metering.estimate_tokens([reply]),
            }
            _warn_once(f"the endpoint reported no token usage for agent '{agent}''s call")
        record.reply = reply
        record.input_tokens = int(usage.get("input_tokens", 0))
        record.output_tokens = int(usage.get("output_tokens", 0))
        record.seconds = round(time.monotonic() - started, 3)
        record.cost_usd = metering.cost_usd(
            settings, record.model, record.input_tokens, record.output_tokens
        )
        record.run_seconds = round(meter.seconds, 3) if meter is not None else 0.0
        record.run = entry.run if entry is not None else ""
        if entry is not None:
            await entry.write(record)
        return record
    raise AssertionError("unreachable: the last attempt returns or raises")


_RATES: dict[tuple[str, float], InMemoryRateLimiter] = {}
_SLOTS: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, int], asyncio.Semaphore]] = (
    WeakKeyDictionary()
)


@asynccontextmanager
async def _request_slot(settings: Settings) -> AsyncIterator[None]:
    """Hold one of the endpoint's request slots, once its rate limiter lets a request go.

    Keyed by endpoint: every agent and worker of the process shares them. The rate limiter
    (LangChain's token bucket) is thread-safe and shared by every event loop; a semaphore
    belongs to one loop, so each loop has its own.
    """
    where = settings.base_url or ""
    slots = None
    if settings.max_concurrent_requests is not None:
        per_loop = _SLOTS.setdefault(asyncio.get_running_loop(), {})
        key = (where, settings.max_concurrent_requests)
        slots = per_loop.setdefault(key, asyncio.Semaphore(settings.max_concurrent_requests))
    rate = None
    if settings.requests_per_second is not None:
        rate = _RATES.setdefault(
            (where, settings.requests_per_second),
            InMemoryRateLimiter(
                requests_per_second=settings.requests_per_second, check_every_n_seconds=0.05
            ),
        )
    # The slot first: a request waiting for its turn at the rate limit must not let more
    # than the allowed number go the moment it passes.
    async with slots if slots is not None else nullcontext():
        if rate is not None:
            await rate.aacquire()
        yield


RETRIED_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))
"""Statuses a later attempt can fix (the same set OpenAI's own client retries)."""


_WARNED: set[str] = set()


def _warn_once(what: str) -> None:
    """Say on stderr, once per process, that token counts are estimates."""
    if "usage" not in _WARNED:
        _WARNED.add("usage")
        print(
            f"quorum: {what}; its tokens and those of any call like it are estimated "
            "(about 4 characters a token). Budgets count the estimates.",
            file=sys.stderr,
        )


EMPTY_STREAM = "No generations found in stream."
"""What langchain-core raises when a streamed reply held no chunk (its message is the only
sign: a plain ValueError); tests/test_faults.py sends such a reply."""


def _classify(
    error: Exception, agent: str, attempt: int, settings: Settings
) -> tuple[ModelError, float | None]:
    """What went wrong, and how long to wait before the next attempt (None: do not retry)."""
    import openai  # loaded with the model that raised

    if isinstance(error, openai.AuthenticationError | openai.PermissionDeniedError):
        return ModelError(
            f"the model endpoint refused the API key (agent '{agent}'): {_said(error)}",
            hint="check QUORUM_API_KEY",
        ), None
    if isinstance(error, openai.NotFoundError):
        return ModelError(
            f"the model endpoint does not know the model for agent '{agent}'",
            hint="check QUORUM_MODEL or the context's 'model' and 'models'",
        ), None
    if isinstance(error, openai.APIStatusError) and error.status_code not in RETRIED_STATUSES:
        return ModelError(
            f"the model endpoint rejected agent '{agent}''s request "
            f"(HTTP {error.status_code}): {_said(error)}",
            hint="retrying will not help: check the model's limits (context length, "
            "output cap) and the endpoint's settings",
        ), None
    if isinstance(error, openai.APIStatusError):
        what = f"HTTP {error.status_code}: {_said(error)}"
    elif isinstance(error, openai.APITimeoutError):
        what = f"no answer within {endpoint(settings).timeout:g} s"
    elif isinstance(error, openai.APIConnectionError):
        what = f"connection failed ({type(error.__cause__ or error).__name__})"
    elif isinstance(error, json.JSONDecodeError | openai.APIResponseValidationError):
        what = f"malformed response body ({redact(str(error))[:200]})"
    elif isinstance(error, ValueError) and str(error) == EMPTY_STREAM:
        # A streamed reply whose body held no event (a cut or non-SSE body): LangChain's
        # words for it; the same fault as a malformed body, streamed.
        what = "malformed response body (a stream with no reply in it)"
    else:
        raise error  # a bug, not the endpoint: keep its traceback
    failure = ModelError(
        f"the model endpoint failed agent '{agent}''s call: {what}",
        hint="check that the endpoint is up and not overloaded, or raise QUORUM_MAX_ATTEMPTS",
    )
    backoff = settings.retry_wait * 2 ** (attempt - 1)
    wait = min(backoff, settings.retry_max_wait) * random.uniform(0.5, 1.0)
    asked = _retry_after(error)
    if asked is not None:
        if asked > settings.retry_max_wait:
            return ModelError(
                f"{failure.message}; it asks to retry after {asked:g} s",
                hint=f"retry later, or raise QUORUM_RETRY_MAX_WAIT above {asked:g}",
            ), None
        wait = max(wait, asked)
    return failure, wait


def _retry_after(error: Exception) -> float | None:
    """The wait a 429 or 503 asks for, in seconds (Retry-After, or Retry-After-Ms)."""
    response = getattr(error, "response", None)
    if response is None:
        return None
    headers = response.headers
    try:
        if (millis := headers.get("retry-after-ms")) is not None:
            return max(float(millis) / 1000, 0.0)
        if (value := headers.get("retry-after")) is None:
            return None
        try:
            return max(float(value), 0.0)
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(when.timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def _said(error: openai.APIStatusError) -> str:
    """What the endpoint said, short and with secrets hidden."""
    body = error.body if isinstance(error.body, dict) else {}
    message = body.get("message") or (body.get("error") or {}).get("message") or error.message
    return redact(str(message))[:300]


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def _parse_json(reply: AIMessage) -> Any:
    text = reply.text
    # Some models wrap JSON in a markdown fence even when asked not to.
    fenced = _FENCE.match(text)
    # strict=False: grammar-constrained servers let raw newlines into strings.
    return json.loads(fenced.group(1) if fenced else text, strict=False)


def _brief(error: ValueError) -> str:
    if not isinstance(error, ValidationError):
        return f"invalid JSON: {error}"
    return json.dumps(
        [{"at": ".".join(map(str, e["loc"])), "problem": e["msg"]} for e in error.errors()]
    )
