"""Run settings: the `context_schema` every Quorum graph is compiled with.

One frozen dataclass with plain JSON-friendly fields, so LangGraph Studio can render a form
from it and a thread can store the exact settings it ran with (resume reuses them). Unset
model fields fall back to `quorum.settings.Settings`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from quorum.errors import UsageError, check_utf8, problems


@dataclass(frozen=True, kw_only=True)
class Budget:
    """Limits on one agent's spending in a run (empty: no limit)."""

    max_tokens: Annotated[
        int | None, Field(ge=1, description="Input plus output tokens, every call counted.")
    ] = None
    max_cost_usd: Annotated[
        float | None, Field(ge=0, description="Cost in US dollars, from the price table.")
    ] = None
    max_model_calls: Annotated[
        int | None, Field(ge=1, description="Model calls (a retried call counts once).")
    ] = None


@dataclass(frozen=True, kw_only=True)
class QuorumContext:
    """Settings for one run of a pattern."""

    model: Annotated[
        str, Field(description="Default model for every agent; empty uses QUORUM_MODEL.")
    ] = ""
    models: Annotated[
        dict[str, str],
        Field(description="Per-agent model overrides, e.g. {'judge': 'gpt-4o'}."),
    ] = field(default_factory=dict)
    temperature: Annotated[
        float | None,
        Field(ge=0, le=2, description="Sampling temperature; empty uses QUORUM_TEMPERATURE."),
    ] = None
    max_steps: Annotated[
        int, Field(ge=1, le=200, description="ReAct: most reason/act steps before stopping.")
    ] = 8
    max_reasoning_tokens: Annotated[
        int,
        Field(
            ge=16,
            le=32768,
            description="Cap on an agent's plain-text reasoning before a structured reply, "
            "and on a debate's critique.",
        ),
    ] = 320
    max_tool_calls: Annotated[
        int, Field(ge=0, le=50, description="Most tool calls one worker may make.")
    ] = 3
    max_plan_steps: Annotated[
        int, Field(ge=1, le=50, description="Orchestrator: largest plan accepted.")
    ] = 8
    max_plan_repairs: Annotated[
        int, Field(ge=0, le=10, description="Orchestrator: repairs of an invalid plan.")
    ] = 2
    max_revisions: Annotated[
        int, Field(ge=0, le=5, description="Pipeline: summary revisions after a fact-check.")
    ] = 1
    max_rounds: Annotated[
        int, Field(ge=1, le=10, description="Debate: critique-and-revise rounds.")
    ] = 1
    samples: Annotated[
        int,
        Field(ge=1, le=20, description="Eval self-consistency: answers sampled per question."),
    ] = 5
    debater_a_persona: Annotated[str, Field(description="Debate: who the first debater is.")] = (
        "a careful analyst who reasons from first principles"
    )
    debater_b_persona: Annotated[str, Field(description="Debate: who the second debater is.")] = (
        "a pragmatic practitioner who argues from real-world experience"
    )
    max_tokens: Annotated[
        int | None,
        Field(ge=1, description="Budget: input plus output tokens for the whole run."),
    ] = None
    max_cost_usd: Annotated[
        float | None, Field(ge=0, description="Budget: cost of the whole run in US dollars.")
    ] = None
    max_model_calls: Annotated[
        int | None, Field(ge=1, description="Budget: model calls for the whole run.")
    ] = None
    max_seconds: Annotated[
        float | None,
        Field(
            gt=0,
            description="Budget: seconds the run may take, counted while a process runs it "
            "(kept across resume).",
        ),
    ] = None
    agent_budgets: Annotated[
        dict[str, Budget],
        Field(description="Budgets per agent, e.g. {'researcher': {'max_tokens': 20000}}."),
    ] = field(default_factory=dict)
    approve_tools: Annotated[
        list[str],
        Field(
            description="Irreversible tools approved in advance for this run (unattended "
            "runs); every other irreversible call waits for a person."
        ),
    ] = field(default_factory=list)
    agent_tools: Annotated[
        dict[str, list[str]],
        Field(
            description="The tools an agent may use, by agent, replacing its default set, "
            "e.g. {'researcher': ['web_search', 'write_file']}. By default the ReAct agent "
            "is offered every tool and every other agent only tools without side effects."
        ),
    ] = field(default_factory=dict)

    def model_for(self, agent: str) -> str:
        """The model name this context picks for `agent` ('' means the settings default)."""
        return self.models.get(agent) or self.model

    def to_dict(self) -> dict[str, Any]:
        """The context as plain data, as stored with a thread."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuorumContext:
        """Validate plain data (`--set`, Python, Studio, a stored thread) into a context.

        Every way in gives the same `UsageError`, naming each bad setting and what is wrong.
        """
        known = cls.__dataclass_fields__
        unknown = set(data) - set(known)
        if unknown:
            raise UsageError(
                f"unknown context setting {', '.join(sorted(unknown))}",
                hint=f"known: {', '.join(known)}",
            )
        for name, value in data.items():
            for text in _texts(value):
                check_utf8(text, f"context setting {name}")
        try:
            return _ADAPTER.validate_python(data)
        except ValidationError as error:
            raise UsageError(
                f"invalid context setting: {problems(error)}",
                hint="the run settings and their limits are in README.md, Configuration",
            ) from None

    @classmethod
    def checked(cls, context: QuorumContext | dict[str, Any] | None) -> QuorumContext:
        """`context` validated (a dataclass built in Python is not), or the defaults."""
        if context is None:
            return cls()
        return cls.from_dict(context.to_dict() if isinstance(context, QuorumContext) else context)


_ADAPTER = TypeAdapter(QuorumContext)


def _texts(value: Any) -> Iterator[str]:
    """Every string in a setting's value (and in its keys), however deeply nested."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _texts(key)
            yield from _texts(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _texts(item)


def context_json_schema() -> dict[str, Any]:
    """The JSON schema Studio renders its form from."""
    return _ADAPTER.json_schema()
