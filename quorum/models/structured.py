"""Replies held to a schema: the form each endpoint understands, repair, reasoning first.

`ask_structured` asks for JSON matching a pydantic schema (a grammar on servers that take
one, fitted to what a small model can fill) and lets the model repair an invalid or hollow
reply a bounded number of times; `ask_reasoned` lets the agent reason in plain text first.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
)
from pydantic import BaseModel, ValidationError

from quorum.context import QuorumContext
from quorum.errors import InvalidReply
from quorum.models import client
from quorum.models.call import _invoke
from quorum.models.client import _for_sample, _is_chat_openai
from quorum.models.endpoint import Endpoint, current_endpoint

if TYPE_CHECKING:
    # openai and langchain-openai take most of a second to import: they are loaded when the
    # first model is built, so commands that only read threads (show, threads) never pay it.
    pass


T = TypeVar("T", bound=BaseModel)

STRUCTURED_REPAIRS = 2
"""How many times a model may fix a reply that does not match the schema."""

REPAIR_PROMPT = (
    "Your reply was not valid JSON for the required schema:\n{error}\n"
    "Reply again with only the corrected JSON object."
)


# Grammar bounds for the embedded model (see `_for_grammar`).
MAX_STRING = 160
MAX_ITEMS = 4
MAX_GRAMMAR_STRING = 256
"""The longest length bound sent to any grammar-constrained server."""
NUMBER_STEPS = 20
"""A bounded number is asked for as one of this many steps (plus one) across its range."""


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
    model = _for_sample(await client.load_chat_model(agent, context), sample)
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


def stated(text: str, label: str = "Answer") -> str | None:
    """What the last line of `text` that begins `label:` states; None when none holds a value.

    Markdown around the label ("**Answer:**") and a "Final" before it are set aside. A hollow
    value (a placeholder, JSON punctuation, a nested reply) is left to the structured turn.
    """
    line = rf"^[\s*_#>-]*(?:final\s+)?{re.escape(label)}\s*[*_]*:[*_]*\s*(.+)$"
    found = re.findall(line, text, re.IGNORECASE | re.MULTILINE)
    value = found[-1].strip().strip("*_").strip() if found else ""
    return value if value and hollow(value, label.casefold()) is None else None


PLACEHOLDERS = frozenset(
    {"value", "string", "text", "answer", "your answer", "the answer", "final answer",
     "placeholder", "todo", "tbd", "xxx", "...", "…", "<answer>", "[answer]", "{answer}",
     # The name of a type where a value of it belongs: a 1.5B ReAct researcher reasoned its
     # way to "35 cookies" and then answered "bytes".
     "bytes", "str", "int", "integer", "number", "float", "object", "array", "boolean"}
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
