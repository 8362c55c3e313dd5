"""A scripted chat model: run every pattern offline, deterministically, at no cost.

Quorum's tests, benchmarks and evaluations drive the real graphs with it, and so can you:
it replaces the model at Quorum's one model seam (`quorum.models.client.load_chat_model`) and
nothing else, so journaling, metering, tool steps and checkpoints all run for real.

    from quorum import testing

    script = testing.Script().on("judge", testing.reasoned(
        "Both reach 42; a shows its work.",
        {"final_answer": "42", "winner": "a", "confidence": 0.9}))
    with testing.scripted(script):
        thread = await quorum.run("debate", "What is 6 x 7?")
    assert script.count("judge") == 2  # it weighs the answers in text, then rules

A responder gets the agent's name and the messages it was sent and returns the reply: text,
a dict (sent as JSON, for structured output) or an `AIMessage` (for tool calls). Agents
without a responder of their own answer with `DEFAULT_RESPONDERS`, a valid reply for every
agent of every pattern. `Script.delay` makes every call take that long; `Script.calls` logs
every call with its timing. Every reply reports 10 input and 5 output tokens.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult

Reply = str | dict | AIMessage
Responder = Callable[[str, list[BaseMessage]], Reply]


@dataclass
class Call:
    """One call the scripted model answered."""

    agent: str
    messages: list[BaseMessage]
    start: float
    end: float = 0.0
    tools: list[str] = field(default_factory=list)
    """The tools the agent was offered for this call, by name."""


@dataclass
class Script:
    """What every agent answers, and a log of every call."""

    # Out of the repr: LangChain reprs a model (with its script) when it first traces it,
    # and a log of every call made so far would make that cost grow with the calls.
    responders: dict[str, Responder] = field(default_factory=dict, repr=False)
    delay: float = 0.0
    calls: list[Call] = field(default_factory=list, repr=False)

    def on(self, agent: str, responder: Responder) -> Script:
        """Make `agent` answer with `responder`; returns the script, to chain calls."""
        self.responders[agent] = responder
        return self

    def count(self, agent: str) -> int:
        """How many calls `agent` made."""
        return sum(1 for call in self.calls if call.agent == agent)


class ScriptedChatModel(BaseChatModel):
    """A chat model that answers one agent from a `Script`."""

    agent: str
    script: Any

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        """Accept tools (by name): the script decides whether to call them."""
        return self.bind(tools=[getattr(t, "name", t) for t in tools], **kwargs)

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        raise NotImplementedError("Quorum's agents are async")

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = Call(self.agent, list(messages), time.monotonic(), tools=kwargs.get("tools", []))
        self.script.calls.append(call)
        if self.script.delay:
            await asyncio.sleep(self.script.delay)
        responder = self.script.responders.get(self.agent) or DEFAULT_RESPONDERS[self.agent]
        reply = responder(self.agent, list(messages))
        call.end = time.monotonic()
        if isinstance(reply, dict):
            reply = json.dumps(reply)
        if isinstance(reply, str):
            reply = AIMessage(reply)
        reply.usage_metadata = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
        return ChatResult(generations=[ChatGeneration(message=reply)])


@contextmanager
def scripted(script: Script) -> Iterator[Script]:
    """Answer every agent's model calls from `script` while the block runs."""
    from quorum.models import client as models

    loaded: dict[str, ScriptedChatModel] = {}

    async def load_scripted(agent: str, context: object) -> ScriptedChatModel:
        # One model per agent, as the real seam keeps one client per model.
        if agent not in loaded:
            loaded[agent] = ScriptedChatModel(agent=agent, script=script)
        return loaded[agent]

    original = models.load_chat_model
    models.load_chat_model = load_scripted
    try:
        yield script
    finally:
        models.load_chat_model = original


def last_human(messages: list[BaseMessage]) -> str:
    """The text of the last human message."""
    return next(m.text for m in reversed(messages) if isinstance(m, HumanMessage))


def plan_of(*steps: tuple[str, str, list[str]]) -> dict:
    """A plan reply: (id, worker, dependencies) per step."""
    return {
        "steps": [
            {"id": i, "worker": w, "task": f"task {i}", "dependencies": d} for i, w, d in steps
        ]
    }


def stating(messages: list[BaseMessage]) -> bool:
    """Whether this call asks the agent to state, in a schema, what it just reasoned.

    An agent that reasons first (`quorum.models.ask_reasoned`) sends its working back as an
    AI turn, then asks for the structured reply.
    """
    return any(isinstance(m, AIMessage) for m in messages)


def reasoned(working: str, reply: dict) -> Responder:
    """A responder for an agent that reasons first: `working` as text, then `reply`."""
    return lambda agent, messages: reply if stating(messages) else working


def debater(agent: str, messages: list[BaseMessage]) -> Reply:
    """A debater that answers, critiques and revises, never agreeing."""
    if "Critique that answer" in last_human(messages):
        return f"{agent} finds a gap"
    revising = any(isinstance(m, HumanMessage) and "Revise your answer" in m.text for m in messages)
    answer = f"{agent} revised" if revising else f"{agent} answer"
    if not stating(messages):
        return f"{agent} weighs it.\nAnswer: {answer}"
    return {"answer": answer}


def extracted(prompt: str) -> dict:
    """A faithful extraction of the worked answer in `prompt`.

    It gives what the last "Final answer:" line states, and null when none does.
    """
    stated = re.findall(r"final answer:\s*(.+)", prompt, re.IGNORECASE)
    text = stated[-1].strip().rstrip(".") if stated else ""
    return {"answer": text or None}


def _react_agent(agent: str, messages: list[BaseMessage]) -> AIMessage:
    # Asks the calculator once, then answers with its result.
    if any(isinstance(m, ToolMessage) for m in messages):
        result = json.loads(next(m for m in reversed(messages) if isinstance(m, ToolMessage)).text)
        return AIMessage(f"The answer is {result['value']}.")
    return AIMessage(
        "",
        tool_calls=[{"name": "calculator", "args": {"expression": "6 * 7"}, "id": "c1"}],
    )


DEFAULT_RESPONDERS: dict[str, Responder] = {
    # A valid reply for every agent of every pattern.
    "planner": reasoned(
        "Research and analysis can run at once; the writer needs both.",
        plan_of(("s1", "researcher", []), ("s2", "analyst", []), ("s3", "writer", ["s1", "s2"])),
    ),
    "researcher": lambda a, m: f"researched: {last_human(m)}",
    "analyst": lambda a, m: f"analysed: {last_human(m)}",
    "writer": lambda a, m: f"wrote: {last_human(m)}",
    "synthesizer": lambda a, m: "# Final answer\nAll steps merged.",
    "research": lambda a, m: {"findings": [{"claim": "Water boils at 100 C", "source": "doc"}]},
    "summarize": reasoned("Water boils at 100 C.", {"claims": ["boils at 100 C"]}),
    "fact_check": lambda a, m: {"verdict": "supported", "unsupported_claims": []},
    "format_report": lambda a, m: "# Water\nWater boils at 100 C.",
    "debater_a": debater,
    "debater_b": debater,
    "judge": reasoned(
        "Debater a's answer is clearer.",
        {"final_answer": "debater_a revised", "winner": "a", "confidence": 0.8},
    ),
    "agent": _react_agent,
    # `quorum eval`'s strategies: a working in plain text, then its answer taken out of it.
    "solver": lambda a, m: "6 times 7 is 42.\nFinal answer: 42",
    "sampler": lambda a, m: "6 times 7 is 42.\nFinal answer: 42",
    "extract": lambda a, m: extracted(last_human(m)),
}
