"""The strategies `quorum eval` compares: each is a graph that answers one question.

- `single`: one model call that works the question out in plain text.
- `self-consistency`: `samples` such workings sampled in parallel (one `Send` each, each with
  a seed of its own), the most common answer wins (Wang et al. 2022).
- `orchestrator`, `pipeline`, `debate`, `react`: the pattern's own graph, as a subgraph.

Every strategy reasons in free text; its answer is then taken out of that text by `extract`,
one short structured call typed by the question's checker (a JSON number for a numeric
question), so the form of the answer can never be what limits a strategy: a small model
asked to reason inside a JSON string, under a grammar, got 0 of 10 arithmetic questions
right where the same model in plain text got 6. A working that reaches no answer is
extracted as none, and counted `invalid`, apart from wrong answers; so is a number the
working never writes (the extraction made it up). Strategy settings
(`samples`, `max_rounds`, `model`, `models`, `temperature`) are run settings.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from pydantic import BaseModel, ConfigDict, Field

from quorum.context import QuorumContext
from quorum.evals.checkers import as_number, canonical
from quorum.graphs import PATTERNS
from quorum.graphs.pattern import AgentGraph
from quorum.models import ask, ask_structured
from quorum.state import AnswerKind, EvalState, SampleTask

SOLVER_PROMPT = """Solve the problem. Work it out step by step in plain text, one step a line,
checking each step. End with one last line: "Final answer: " and the answer alone{hint}."""

NUMBER_HINT = " (just the number, no units or words)"

EXTRACT_PROMPT = """Below are a question and a worked answer to it. Give the final answer the
worked answer reaches, exactly as it states it, without solving anything yourself. If it
reaches no answer, give null. Reply with JSON only."""

EXTRACT_TEMPLATE = "Question: {question}\n\nWorked answer:\n{working}"

NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


class NumberAnswer(BaseModel):
    """The number a worked answer reaches."""

    model_config = ConfigDict(extra="forbid")

    answer: float | None = Field(description="The final number reached; null if none.")


class TextAnswer(BaseModel):
    """The answer a worked answer reaches."""

    model_config = ConfigDict(extra="forbid")

    answer: str | None = Field(
        description="The final answer reached, in a few words; null if none."
    )


async def extract(question: str, working: str, kind: AnswerKind, context: QuorumContext) -> str:
    """The answer `working` reaches, typed by `kind`: "" when it reaches none."""
    schema: type[NumberAnswer | TextAnswer] = NumberAnswer if kind == "number" else TextAnswer
    messages = [
        SystemMessage(EXTRACT_PROMPT),
        HumanMessage(EXTRACT_TEMPLATE.format(question=question, working=working.strip())),
    ]
    reply = await ask_structured("extract", context, messages, schema)
    if reply.answer is None:
        return ""
    if kind != "number":
        return str(reply.answer).strip()
    # A number the working never states was made up by the extraction, not reached by the
    # strategy: a worker's answer "classical-mathematics" was extracted as 6. No answer.
    number = as_number(str(reply.answer))
    return canonical(str(reply.answer)) if number is not None and states(working, number) else ""


def states(working: str, number: float) -> bool:
    """Whether `working` writes `number`, in either sign (a working may write -127 as "- 127")."""
    return any(
        (found := as_number(text)) is not None and abs(found) == abs(number)
        for text in NUMBER.findall(working)
    )


async def _work(
    agent: str, state: EvalState | SampleTask, context: QuorumContext, sample: int | None = None
) -> str:
    hint = NUMBER_HINT if state.get("kind") == "number" else ""
    messages = [SystemMessage(SOLVER_PROMPT.format(hint=hint)), HumanMessage(state["input"])]
    return (await ask(agent, context, messages, sample=sample)).text


async def solver(state: EvalState, runtime: Runtime[QuorumContext]) -> dict:
    """Work the question out in one call, then take out its answer."""
    working = await _work("solver", state, runtime.context)
    kind = state.get("kind", "text")
    answer = await extract(state["input"], working, kind, runtime.context)
    return {"answer": answer, "reasoning": working}


def route_to_samplers(state: EvalState, runtime: Runtime[QuorumContext]) -> list[Send]:
    """One sampler per sample, in parallel."""
    return [
        Send("sampler", SampleTask(input=state["input"], kind=state.get("kind", "text"), sample=i))
        for i in range(runtime.context.samples)
    ]


async def sampler(state: SampleTask, runtime: Runtime[QuorumContext]) -> dict:
    """Sample one working, with a seed of its own, and take out its answer."""
    working = await _work("sampler", state, runtime.context, sample=state["sample"])
    answer = await extract(state["input"], working, state.get("kind", "text"), runtime.context)
    return {"samples": [answer]}


async def vote(state: EvalState) -> dict:
    """The most common answer wins; a tie goes to the one sampled first.

    Samples that reached no answer do not vote; if none did, there is no answer.
    """
    samples = [a for a in state.get("samples", []) if a]
    if not samples:
        return {"answer": "", "reasoning": "no sample reached an answer"}
    votes = Counter(canonical(answer) for answer in samples)
    winner, count = votes.most_common(1)[0]
    answer = next(a for a in samples if canonical(a) == winner)
    total = len(state.get("samples", []))
    return {"answer": answer, "reasoning": f"{count} of {total} samples agree"}


async def final_answer(state: EvalState, runtime: Runtime[QuorumContext]) -> dict:
    """Take out the answer the pattern's result reaches."""
    output = state.get("output", "")
    kind = state.get("kind", "text")
    return {"answer": await extract(state["input"], output, kind, runtime.context)}


def _single() -> StateGraph[Any, QuorumContext, Any, Any]:
    builder = AgentGraph(EvalState, context_schema=QuorumContext)
    builder.add_agent(solver)
    builder.add_edge(START, "solver")
    builder.add_edge("solver", END)
    return builder


def _pattern_node(pattern: str) -> Any:
    subgraph = PATTERNS[pattern].compile(name=pattern)

    async def run_pattern(state: EvalState, runtime: Runtime[QuorumContext]) -> dict:
        # A subgraph on the same thread (called from a node, it inherits the checkpointer):
        # its steps are checkpointed, journaled and metered like any run of the pattern. It
        # gets only what a run of it is given (patterns refuse unknown input keys).
        result = await subgraph.ainvoke({"input": state["input"]}, context=runtime.context)
        return {"output": result.get("output", ""), "usage": result.get("usage", {})}

    run_pattern.__name__ = pattern
    return run_pattern


def _self_consistency() -> StateGraph[Any, QuorumContext, Any, Any]:
    builder = AgentGraph(EvalState, context_schema=QuorumContext)
    builder.add_agent(sampler, input_schema=SampleTask)  # its Send payload
    builder.add_node(vote)
    builder.add_conditional_edges(START, route_to_samplers, ["sampler"])
    builder.add_edge("sampler", "vote")
    builder.add_edge("vote", END)
    return builder


def _pattern(pattern: str) -> StateGraph[Any, QuorumContext, Any, Any]:
    builder = AgentGraph(EvalState, context_schema=QuorumContext)
    builder.add_node(pattern, _pattern_node(pattern))
    builder.add_agent(final_answer)
    builder.add_edge(START, pattern)
    builder.add_edge(pattern, "final_answer")
    builder.add_edge("final_answer", END)
    return builder


STRATEGIES: dict[str, StateGraph[Any, QuorumContext, Any, Any]] = {
    "single": _single(),
    "self-consistency": _self_consistency(),
    **{pattern: _pattern(pattern) for pattern in PATTERNS},
}
"""Every strategy by name, as a graph builder (compile it with a checkpointer)."""

SAMPLING_TEMPERATURE = 0.7
"""Self-consistency's temperature when the run sets none: at 0 every sample is the same."""


def context_for(strategy: str, context: QuorumContext) -> QuorumContext:
    """The run settings `strategy` runs with."""
    if strategy == "self-consistency" and context.temperature is None:
        return replace(context, temperature=SAMPLING_TEMPERATURE)
    return context
