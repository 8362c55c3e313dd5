"""The strategies `quorum eval` compares: each is a graph that answers one question.

- `single`: one model call with a structured final answer.
- `self-consistency`: `samples` answers sampled in parallel (one `Send` each, at the run's
  temperature), the most common one wins (Wang et al. 2022).
- `orchestrator`, `pipeline`, `debate`, `react`: the pattern's own graph, as a subgraph,
  followed by `final_answer`, one structured call that reads the pattern's result and states
  the answer it reaches. Its tokens are counted with the pattern's.

Every answer is the `answer` field of a `FinalAnswer` the model returned through the model
seam (`quorum.models.ask_structured`), never text picked out of prose. Strategy settings
(`samples`, `max_rounds`, `model`, `models`, `temperature`) are run settings.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from pydantic import BaseModel, ConfigDict, Field

from quorum.context import QuorumContext
from quorum.evals.checkers import canonical
from quorum.graphs import PATTERNS
from quorum.metering import metered
from quorum.models import ask_structured
from quorum.state import EvalState, SampleTask

SOLVER_PROMPT = """Solve the problem. Work it out step by step in "reasoning", briefly, then put
only the final answer in "answer": just the number when the question asks for a number, with
no units or words. Reply with JSON only."""

FINAL_ANSWER_PROMPT = """A team of agents worked on the question below. Read their result and
state the final answer it reaches. Put only that answer in "answer": just the number when the
question asks for a number, with no units or words. Reply with JSON only."""

RESULT_TEMPLATE = "Question: {question}\n\nThe team's result:\n{output}"


class FinalAnswer(BaseModel):
    """A final answer, with the working that led to it."""

    model_config = ConfigDict(extra="forbid")

    reasoning: str = Field(description="The working, briefly.")
    answer: str = Field(description="Only the final answer, e.g. 42: no units or words.")


async def _solve(agent: str, question: str, context: QuorumContext) -> FinalAnswer:
    messages = [SystemMessage(SOLVER_PROMPT), HumanMessage(question)]
    return await ask_structured(agent, context, messages, FinalAnswer)


@metered
async def solver(state: EvalState, runtime: Runtime[QuorumContext]) -> dict:
    """Answer the question in one call."""
    reply = await _solve("solver", state["input"], runtime.context)
    return {"answer": reply.answer, "reasoning": reply.reasoning}


def route_to_samplers(state: EvalState, runtime: Runtime[QuorumContext]) -> list[Send]:
    """One sampler per sample, in parallel."""
    return [
        Send("sampler", SampleTask(input=state["input"], sample=index))
        for index in range(runtime.context.samples)
    ]


@metered
async def sampler(state: SampleTask, runtime: Runtime[QuorumContext]) -> dict:
    """Sample one answer."""
    reply = await _solve("sampler", state["input"], runtime.context)
    return {"samples": [reply.answer]}


async def vote(state: EvalState) -> dict:
    """The most common answer wins; a tie goes to the one sampled first."""
    samples = state.get("samples", [])
    votes = Counter(canonical(answer) for answer in samples)
    winner, count = votes.most_common(1)[0]
    answer = next(a for a in samples if canonical(a) == winner)
    return {"answer": answer, "reasoning": f"{count} of {len(samples)} samples agree"}


@metered
async def final_answer(state: EvalState, runtime: Runtime[QuorumContext]) -> dict:
    """State the answer the pattern's result reaches, as a structured reply."""
    prompt = RESULT_TEMPLATE.format(question=state["input"], output=state.get("output", ""))
    reply = await ask_structured(
        "final_answer",
        runtime.context,
        [SystemMessage(FINAL_ANSWER_PROMPT), HumanMessage(prompt)],
        FinalAnswer,
    )
    return {"answer": reply.answer, "reasoning": reply.reasoning}


def _single() -> StateGraph[Any, QuorumContext, Any, Any]:
    builder = StateGraph(EvalState, context_schema=QuorumContext)
    builder.add_node(solver)
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
    builder = StateGraph(EvalState, context_schema=QuorumContext)
    builder.add_node(sampler, input_schema=SampleTask)  # its Send payload
    builder.add_node(vote)
    builder.add_conditional_edges(START, route_to_samplers, ["sampler"])
    builder.add_edge("sampler", "vote")
    builder.add_edge("vote", END)
    return builder


def _pattern(pattern: str) -> StateGraph[Any, QuorumContext, Any, Any]:
    builder = StateGraph(EvalState, context_schema=QuorumContext)
    builder.add_node(pattern, _pattern_node(pattern))
    builder.add_node(final_answer)
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
