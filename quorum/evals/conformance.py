"""Structured-reply conformance: does a model fill each of Quorum's schemas with real values.

`python -m bench conformance [--model qwen2.5-coder-1.5b|smollm2-135m|both] [-n 10]` starts
the embedded model and sends `n` prompts per schema, each through the agent node that asks
for it in a real run (the planner's `Plan`, a debater's opening and revised `Claim`, the judge's
`Ruling`, the summarizer's `Claims`, the fact-checker's `FactCheck`, the researcher's
`ResearchNotes`) and through the eval's `extract` for `NumberAnswer`. Per schema it reports:

- `first try`: the reply was valid the first time (no repair asked for; a debater's claim
  read from its own "Answer:" line counts);
- `valid`: the node got a valid reply within its bounded repair;
- `filled`: of all prompts, the share whose reply is valid and filled with meaning, judged
  here and not by Quorum's own checks: every text value has words or digits, and none is
  empty, a placeholder or JSON;
- `right` (`NumberAnswer` only): the number taken out of a worked solution is the one it
  states. This is the extraction the eval relies on; its target is at least 99%.

`tests/test_e2e_embedded.py` runs the same cases on SmolLM2 with a small `n`.
"""

from __future__ import annotations

import os
import random
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage
from langgraph.runtime import Runtime
from pydantic import BaseModel

from quorum import models
from quorum.context import QuorumContext
from quorum.errors import ModelError
from quorum.evals.strategies import extract
from quorum.metering import metered
from quorum.nodes.debate import debater_a, judge
from quorum.nodes.pipeline import (
    fact_check_brief,
    fact_check_verdict,
    research_brief,
    research_notes,
    summarize,
)
from quorum.nodes.planner import planner
from quorum.settings import get_settings
from quorum.state import Finding, Position, ResearchNotes, Summary, total_usage

GOALS = [
    "Compare SQLite and PostgreSQL as the checkpoint store for a small team's agent service",
    "Decide whether a startup should self-host an open-weights LLM or use a hosted API",
    "Write a one-page guide to retrying HTTP requests safely",
    "Estimate the monthly cost of running 1,000 agent runs a day on a hosted model",
    "Choose between Redis and PostgreSQL for a job queue",
    "Explain how write-ahead logging keeps a database consistent after a crash",
    "Plan the migration of a cron job to a durable workflow engine",
    "Summarize the trade-offs of tabs versus spaces for a style guide",
    "Recommend a way to trace which agent spent which tokens",
    "Decide whether to cache model replies, and for how long",
]

QUESTIONS = [
    ("Which is larger, 2 to the power 10 or 10 cubed?", "2 to the power 10 (1024)"),
    ("What is the capital of Australia?", "Canberra"),
    ("Is 91 a prime number?", "No: 91 = 7 x 13"),
    ("How many days are in a leap year?", "366"),
    ("Which planet is closest to the Sun?", "Mercury"),
    ("What is 15% of 80?", "12"),
    ("Which gas do plants take in for photosynthesis?", "Carbon dioxide"),
    ("How many sides does a hexagon have?", "6"),
    ("Who wrote 'Pride and Prejudice'?", "Jane Austen"),
    ("At what temperature in Celsius does water freeze at sea level?", "0"),
]

TOPICS = [
    ("SQLite's write-ahead log", ["SQLite's WAL lets readers run while one writer writes"]),
    ("Retries with backoff", ["Exponential backoff doubles the wait after each failure"]),
    ("Idempotency keys", ["An idempotency key lets a server apply a repeated request once"]),
    ("Token budgets", ["A token budget stops a run once it has used its allowance"]),
    ("Checkpointing", ["A checkpoint saves a graph's state after each step"]),
    ("Prompt injection", ["Injected text in a tool result can try to steer an agent"]),
    ("Self-consistency", ["Self-consistency samples several answers and takes the most common"]),
    ("Rate limits", ["A 429 status says the client sent too many requests"]),
    ("Tracing", ["A trace links each model call to the agent step that made it"]),
    ("Human approval", ["An approval step pauses a run until a person decides"]),
]

PLACEHOLDERS = {"value", "string", "text", "answer", "your answer", "placeholder", "todo", "..."}


def worked_solutions(n: int, seed: int = 7) -> list[tuple[str, str, float]]:
    """`n` (question, worked solution, its answer): arithmetic worked in the styles models use.

    The solutions are right or wrong on purpose (an extraction must give what the working
    states, not what is true), and end in the many ways a final answer is written.
    """
    rng = random.Random(seed)
    endings = [
        "Final answer: {v}",
        "So the answer is {v}.",
        "The result is **{v}**.",
        "Therefore, {expr} = {v}.",
        "Final answer: {v}\n",
        "Answer: {v}",
        "That gives {v} in total.",
    ]
    out = []
    for _ in range(n):
        a, b, c, d = (rng.randint(2, 60) for _ in range(4))
        expr = f"{a} * {b} + {c} - {d}"
        stated = a * b + c - d + rng.choice([0, 0, 0, 1, -10])
        working = (
            f"First, {a} * {b} = {a * b}.\nThen {a * b} + {c} = {a * b + c}.\n"
            f"Then {a * b + c} - {d} = {stated}.\n"
            + rng.choice(endings).format(v=stated, expr=expr)
        )
        out.append((f"What is {expr}?", working, float(stated)))
    return out


NONEMPTY = {"steps", "findings"}
"""Lists a reply says nothing without: a plan's steps, research's findings. (A summary's
claims may be empty: SmolLM2 lists none, and held to one or more it fills them with nothing.)"""


def filled(value: Any, name: str = "") -> bool:
    """Whether every text in `value` (a reply as plain data) holds a real value."""
    if isinstance(value, str):
        text = value.strip()
        return (
            len(re.findall(r"[A-Za-z0-9]", text)) >= 1
            and text.casefold().strip(" .") not in PLACEHOLDERS
            and not re.search(r'[{\[]\s*"', text)
        )
    if isinstance(value, list):
        return (bool(value) or name not in NONEMPTY) and all(filled(item) for item in value)
    if isinstance(value, dict):
        return all(filled(item, key) for key, item in value.items())
    return value is not None


@dataclass
class Outcome:
    """What one prompt gave."""

    calls: int
    """Model calls the node made (a reasoned reply takes two; each repair one more)."""
    reply: Any = None
    """The typed reply as plain data; None when the node gave up (`error`)."""
    error: str = ""
    right: bool | None = None


@dataclass
class Case:
    """One schema: how to ask for it through its node, and how many calls a first try takes."""

    schema: str
    calls: int
    ask: Callable[[int, QuorumContext], Awaitable[Outcome]]


@dataclass
class Row:
    """A schema's results on one model."""

    model: str
    schema: str
    n: int
    first_try: int = 0
    valid: int = 0
    filled: int = 0
    right: int | None = None
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def share(self, count: int | None) -> str:
        """`count` as a percentage of the prompts."""
        return "" if count is None else f"{100 * count / self.n:.0f}%"


def _plain(value: Any) -> Any:
    return value.model_dump() if isinstance(value, BaseModel) else value


async def _node(
    node: Callable[..., Awaitable[dict]], state: dict, context: QuorumContext, key: str
) -> Outcome:
    """Run one agent node as a run would; count its calls from the usage it reports."""
    runtime = Runtime(context=context)
    try:
        # Metered as a graph wires an agent (`AgentGraph.add_agent`).
        update = await metered(node)(state, runtime)
    except ModelError as error:
        # The node gave up after its bounded repair; its calls are in the error's usage.
        return Outcome(calls=-1, error=str(error))
    calls = total_usage(update.get("usage", {}))["calls"]
    return Outcome(calls=calls, reply=_plain(update.get(key)))


def _position(question: str, answer: str) -> Position:
    return Position(reasoning=f"Working it out: {answer}.", answer=answer)


async def _plan(i: int, context: QuorumContext) -> Outcome:
    return await _node(planner, {"input": GOALS[i % len(GOALS)]}, context, "plan")


async def _debater(state: dict, context: QuorumContext) -> Outcome:
    """Debater a's turn; its reply is the answer its position states."""
    outcome = await _node(debater_a, state, context, "positions")
    if outcome.reply:
        outcome.reply = {"answer": outcome.reply["a"].answer}
    return outcome


async def _claim(i: int, context: QuorumContext) -> Outcome:
    question, _ = QUESTIONS[i % len(QUESTIONS)]
    return await _debater({"input": question, "phase": "answer"}, context)


async def _revision(i: int, context: QuorumContext) -> Outcome:
    question, answer = QUESTIONS[i % len(QUESTIONS)]
    state = {
        "input": question,
        "phase": "revise",
        "positions": {"a": _position(question, "I am not sure"), "b": _position(question, answer)},
        "critiques": {"a": f"The answer is vague; the right answer is {answer}."},
    }
    return await _debater(state, context)


async def _ruling(i: int, context: QuorumContext) -> Outcome:
    question, answer = QUESTIONS[i % len(QUESTIONS)]
    state = {
        "input": question,
        "positions": {"a": _position(question, answer), "b": _position(question, "I don't know")},
    }
    outcome = await _node(judge, state, context, "verdict")
    if outcome.reply:
        outcome.reply = {k: v for k, v in outcome.reply.items() if k != "rationale"}
    return outcome


def _notes(i: int) -> tuple[str, ResearchNotes]:
    topic, claims = TOPICS[i % len(TOPICS)]
    return topic, ResearchNotes(findings=[Finding(claim=c, source="notes.md") for c in claims])


async def _claims(i: int, context: QuorumContext) -> Outcome:
    topic, notes = _notes(i)
    outcome = await _node(summarize, {"input": topic, "notes": notes}, context, "summary")
    if outcome.reply:
        outcome.reply = {"claims": outcome.reply["claims"]}
    return outcome


async def _answered(brief: dict, agent: str, context: QuorumContext) -> list:
    # The tool loop's last turn, without tools: the agent's own answer before its typed output.
    answer = await models.ask(agent, context, brief["messages"])
    return [*brief["messages"], AIMessage(answer.text)]


async def _fact_check(i: int, context: QuorumContext) -> Outcome:
    topic, notes = _notes(i)
    summary = Summary(text=notes.findings[0].claim + ".", claims=[notes.findings[0].claim])
    brief = await fact_check_brief({"notes": notes, "summary": summary}, Runtime(context=context))
    messages = await _answered(brief, "fact_check", context)
    outcome = await _node(fact_check_verdict, {"messages": messages}, context, "fact_check")
    outcome.calls += 1
    return outcome


async def _research(i: int, context: QuorumContext) -> Outcome:
    topic, _ = TOPICS[i % len(TOPICS)]
    brief = await research_brief({"input": topic}, Runtime(context=context))
    messages = await _answered(brief, "research", context)
    outcome = await _node(research_notes, {"messages": messages}, context, "notes")
    outcome.calls += 1
    return outcome


def _number_case(solutions: list[tuple[str, str, float]]) -> Callable[..., Awaitable[Outcome]]:
    async def ask(i: int, context: QuorumContext) -> Outcome:
        question, working, stated = solutions[i]
        counted = metered(_extract_node)
        try:
            update = await counted(
                {"input": question, "working": working}, Runtime(context=context)
            )
        except ModelError as error:
            return Outcome(calls=-1, error=str(error), right=False)
        calls = total_usage(update["usage"])["calls"]
        answer = update["answer"]
        right = answer != "" and float(answer) == stated
        return Outcome(calls=calls, reply={"answer": answer}, right=right)

    return ask


async def _extract_node(state: dict, runtime: Runtime[QuorumContext]) -> dict:
    answer = await extract(state["input"], state["working"], "number", runtime.context)
    return {"answer": answer}


def cases(n: int) -> list[Case]:
    """The schemas, each asked through its node; `n` sizes the worked solutions."""
    return [
        Case("Plan", 2, _plan),
        Case("Claim", 2, _claim),
        Case("Claim (revised)", 2, _revision),
        Case("Ruling", 2, _ruling),
        Case("Claims", 2, _claims),
        Case("FactCheck", 2, _fact_check),
        Case("ResearchNotes", 2, _research),
        Case("NumberAnswer", 1, _number_case(worked_solutions(n))),
    ]


async def conformance(model: str, n: int, *, numbers: int | None = None) -> list[Row]:
    """Send `n` prompts per schema (`numbers` for `NumberAnswer`) to the embedded `model`.

    The process's settings must already point at the embedded model (`configure`).
    """
    context = QuorumContext()
    rows = []
    for case in cases(numbers or n):
        row = Row(model, case.schema, numbers or n if case.schema == "NumberAnswer" else n)
        started = time.perf_counter()
        for i in range(row.n):
            outcome = await case.ask(i, context)
            if outcome.error:
                row.errors.append(outcome.error)
                continue
            row.valid += 1
            # Fewer calls than a first try: the claim was read from the working's own
            # "Answer:" line, with no structured turn to get wrong.
            row.first_try += outcome.calls <= case.calls
            row.filled += filled(outcome.reply)
            if outcome.right is not None:
                row.right = (row.right or 0) + outcome.right
        row.seconds = time.perf_counter() - started
        rows.append(row)
    return rows


def configure(data_dir: str, model: str) -> None:
    """Point this process's Quorum settings at the embedded `model`, seeded, at temperature 0."""
    for name in ("QUORUM_BASE_URL", "OPENAI_BASE_URL", "QUORUM_API_KEY", "OPENAI_API_KEY"):
        os.environ.pop(name, None)
    os.environ.update(
        QUORUM_DATA_DIR=data_dir,
        QUORUM_TEMPERATURE="0",
        QUORUM_SEED="7",
        QUORUM_EMBEDDED_MODEL=model,
        LANGSMITH_TRACING="false",
    )
    get_settings.cache_clear()
    if not models.current_endpoint().embedded:
        sys.exit(
            "conformance: the settings (a .env file?) name an endpoint, not the embedded model"
        )


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| model | schema | n | first try | valid | filled | right | s/prompt |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.schema} | {r.n} | {r.share(r.first_try)} | {r.share(r.valid)} "
            f"| {r.share(r.filled)} | {r.share(r.right)} | {r.seconds / r.n:.1f} |"
        )
    return "\n".join(lines)
