"""The debate's agents: two debaters with their own personas (and models), and a judge.

A debater answers, critiques the other's answer, then revises its own in the light of the
critique it received; the moderator (graph code, not a model) moves the phases along.
"""

from __future__ import annotations

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from pydantic import BaseModel, ConfigDict, Field

from quorum.context import QuorumContext
from quorum.metering import metered
from quorum.models import ask_structured
from quorum.state import DebateState, Position, Side, Verdict

DEBATER_PROMPT = """You are {persona}, one of two debaters answering a question. Be accurate
and concise. Reply with JSON only."""

ANSWER_TEMPLATE = "Question: {question}\nGive your answer and your reasoning."

CRITIQUE_TEMPLATE = """Question: {question}
Your opponent answered:
{other}
Critique that answer: point out errors, gaps and weak reasoning, and say what is right."""

REVISE_TEMPLATE = """Question: {question}
Your answer was:
{own}
Your opponent's critique of it:
{critique}
Your opponent's answer:
{other}
Revise your answer. Set agrees_with_opponent to true only if you now hold the same answer."""

JUDGE_PROMPT = """You are the judge of a debate. Read the question and both final answers, decide
which is better supported and correct, and give the final answer. Confidence is between 0 and
1. Reply with JSON only."""


class Critique(BaseModel):
    """A debater's critique of the other's answer."""

    model_config = ConfigDict(extra="forbid")

    critique: str = Field(description="Errors, gaps and strengths of the opponent's answer.")


class Revision(BaseModel):
    """A debater's revised answer."""

    model_config = ConfigDict(extra="forbid")

    reasoning: str = Field(description="Why, briefly: what the critique changed, or not.")
    answer: str = Field(description="The revised answer.")
    agrees_with_opponent: bool = Field(description="True if both now hold the same answer.")


def _other(side: Side) -> Side:
    return "b" if side == "a" else "a"


async def _debate_turn(side: Side, state: DebateState, context: QuorumContext) -> dict:
    agent = f"debater_{side}"
    persona = context.debater_a_persona if side == "a" else context.debater_b_persona
    system = SystemMessage(DEBATER_PROMPT.format(persona=persona))
    question, positions = state["input"], state.get("positions", {})
    phase = state["phase"]
    if phase == "answer":
        prompt = ANSWER_TEMPLATE.format(question=question)
        position = await ask_structured(agent, context, [system, HumanMessage(prompt)], Position)
        return {"positions": {side: position}}
    other = positions[_other(side)].answer
    if phase == "critique":
        prompt = CRITIQUE_TEMPLATE.format(question=question, other=other)
        critique = await ask_structured(agent, context, [system, HumanMessage(prompt)], Critique)
        return {"critiques": {_other(side): critique.critique}}
    prompt = REVISE_TEMPLATE.format(
        question=question,
        own=positions[side].answer,
        critique=state["critiques"][side],
        other=other,
    )
    revision = await ask_structured(agent, context, [system, HumanMessage(prompt)], Revision)
    return {
        "positions": {side: Position(answer=revision.answer, reasoning=revision.reasoning)},
        "agreement": {side: revision.agrees_with_opponent},
    }


@metered
async def debater_a(state: DebateState, runtime: Runtime[QuorumContext]) -> dict:
    """The first debater's turn in the current phase."""
    return await _debate_turn("a", state, runtime.context)


@metered
async def debater_b(state: DebateState, runtime: Runtime[QuorumContext]) -> dict:
    """The second debater's turn in the current phase."""
    return await _debate_turn("b", state, runtime.context)


@metered
async def judge(state: DebateState, runtime: Runtime[QuorumContext]) -> dict:
    """Decide the debate with a structured verdict."""
    positions = state["positions"]
    answers = "\n\n".join(
        f"Debater {side}:\n{positions[side].answer}\nReasoning: {positions[side].reasoning}"
        for side in ("a", "b")
    )
    verdict = await ask_structured(
        "judge",
        runtime.context,
        [
            SystemMessage(JUDGE_PROMPT),
            HumanMessage(f"Question: {state['input']}\n\n{answers}"),
        ],
        Verdict,
    )
    return {"verdict": verdict, "output": verdict.final_answer}
