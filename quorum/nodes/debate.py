"""The debate's agents: two debaters with their own personas (and models), and a judge.

A debater answers, critiques the other's answer, then revises its own in the light of the
critique it received; the moderator (graph code, not a model) moves the phases along. Every
agent reasons in plain text; a critique stays prose. A debater ends its working on an
"Answer:" line, read as its claim; only when there is none is the claim asked for in a small
schema with the reasoning in view (`ask_reasoned`), as the judge's ruling always is. Whether
the two now agree is compared in code (`same_answer`), not asked of either.
"""

from __future__ import annotations

import re
from typing import Literal

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from pydantic import BaseModel, ConfigDict, Field

from quorum.context import QuorumContext
from quorum.errors import InvalidReply
from quorum.models import ask, ask_reasoned, stated
from quorum.state import DebateState, Position, Side, Verdict

DEBATER_PROMPT = """You are {persona}, one of two debaters answering a question. Be accurate
and brief: reason in plain text, in a few sentences, and check each step."""

ANSWER_TEMPLATE = """Question: {question}
Work out your answer step by step, then end with one last line: "Answer: " and your answer."""

CRITIQUE_TEMPLATE = """Question: {question}
Your opponent's answer and reasoning:
{other}
Critique that answer in a few sentences: point out errors, gaps and weak reasoning, and say
what is right."""

REVISE_TEMPLATE = """Question: {question}
Your answer and reasoning were:
{own}
Your opponent's critique of it:
{critique}
Your opponent's answer and reasoning:
{other}
Revise your answer: keep what holds, fix what the critique shows is wrong. End with one last
line: "Answer: " and your answer."""

ANSWER_REQUEST = "Now state the answer your reasoning above ends on, as JSON."

JUDGE_PROMPT = """You are the judge of a debate. Read the question and both final answers, and
weigh them in plain text, in a few sentences: check each one's reasoning, and decide which
answer is correct and better supported."""

RULING_REQUEST = """Now state your ruling as JSON: which debater argued better (a, b or tie), how
sure you are, from 0 to 1, and the final answer you settle on, in words."""


KEPT = " (kept from before: its revision stated no answer)"


class Claim(BaseModel):
    """The answer a debater's reasoning ends on."""

    model_config = ConfigDict(extra="forbid")

    answer: str = Field(description="The answer itself, as the reasoning states it.")


class Ruling(BaseModel):
    """The outcome of the judge's weighing."""

    model_config = ConfigDict(extra="forbid")

    # The choice and its confidence first: they are constrained, and a small model that has
    # written them goes on to write the answer as words, not JSON punctuation.
    winner: Literal["a", "b", "tie"] = Field(description="Which debater argued better.")
    confidence: float = Field(ge=0, le=1, description="How sure the judge is, 0 to 1.")
    final_answer: str = Field(
        min_length=2, description="The answer the judge settles on, in words."
    )


def _folded(answer: str) -> str:
    return " ".join(re.findall(r"[a-z0-9.-]+", answer.lower().replace(",", ""))).strip(".")


def same_answer(first: str, second: str) -> bool:
    """Whether two answers are one answer, as far as plain code can tell.

    The same once case, spacing, commas and punctuation are set aside; or one is a bare
    number that the other states as its only number ("398" and "398 km"). Anything else
    counts as a disagreement: a debate held needlessly costs tokens, one skipped on a false
    agreement can cost the answer.
    """
    first, second = _folded(first), _folded(second)
    if first == second:
        return bool(first)
    numbers = [re.findall(r"-?[0-9]+(?:\.[0-9]+)?", text) for text in (first, second)]
    bare = any(re.fullmatch(r"-?[0-9]+(?:\.[0-9]+)?", text) for text in (first, second))
    return (
        bare
        and len(numbers[0]) == len(numbers[1]) == 1
        and (float(numbers[0][0]) == float(numbers[1][0]))
    )


def agreeing(state: DebateState) -> bool:
    """Whether both debaters now hold the same answer: then there is nothing left to debate."""
    positions = state.get("positions", {})
    return len(positions) == 2 and same_answer(positions["a"].answer, positions["b"].answer)


def _other(side: Side) -> Side:
    return "b" if side == "a" else "a"


def _argued(position: Position) -> str:
    return position.reasoning or position.answer


def _claim(working: str) -> Claim | None:
    answer = stated(working)
    return Claim(answer=answer) if answer is not None else None


async def _debate_turn(side: Side, state: DebateState, context: QuorumContext) -> dict:
    agent = f"debater_{side}"
    persona = context.debater_a_persona if side == "a" else context.debater_b_persona
    system = SystemMessage(DEBATER_PROMPT.format(persona=persona))
    question, positions = state["input"], state.get("positions", {})
    phase = state["phase"]
    if phase == "answer":
        prompt = ANSWER_TEMPLATE.format(question=question)
        working, claim = await ask_reasoned(
            agent, context, [system, HumanMessage(prompt)], Claim, request=ANSWER_REQUEST,
            read=_claim,
        )  # fmt: skip
        return {"positions": {side: Position(reasoning=working, answer=claim.answer)}}
    other = _argued(positions[_other(side)])
    if phase == "critique":
        # A critique is prose for the other side to read: nothing in it needs a schema.
        prompt = CRITIQUE_TEMPLATE.format(question=question, other=other)
        critique = await ask(
            agent, context, [system, HumanMessage(prompt)], max_tokens=context.max_reasoning_tokens
        )
        return {"critiques": {_other(side): critique.text}}
    prompt = REVISE_TEMPLATE.format(
        question=question,
        own=_argued(positions[side]),
        critique=state["critiques"][side],
        other=other,
    )
    try:
        working, claim = await ask_reasoned(
            agent, context, [system, HumanMessage(prompt)], Claim, request=ANSWER_REQUEST,
            read=_claim,
        )  # fmt: skip
    except InvalidReply:
        # A revision that states no answer leaves the debater where it stood: its earlier
        # answer goes to the judge, marked as kept (every failed reply is in the journal).
        return {"positions": {side: positions[side].model_copy(update={"kept": True})}}
    return {"positions": {side: Position(answer=claim.answer, reasoning=working)}}


async def debater_a(state: DebateState, runtime: Runtime[QuorumContext]) -> dict:
    """The first debater's turn in the current phase."""
    return await _debate_turn("a", state, runtime.context)


async def debater_b(state: DebateState, runtime: Runtime[QuorumContext]) -> dict:
    """The second debater's turn in the current phase."""
    return await _debate_turn("b", state, runtime.context)


async def judge(state: DebateState, runtime: Runtime[QuorumContext]) -> dict:
    """Weigh both final answers in plain text, then give the verdict."""
    positions = state["positions"]
    answers = "\n\n".join(
        f"Debater {side}'s answer{KEPT if positions[side].kept else ''}: {positions[side].answer}\n"
        f"Reasoning:\n{_argued(positions[side])}"
        for side in ("a", "b")
    )
    working, ruling = await ask_reasoned(
        "judge",
        runtime.context,
        [SystemMessage(JUDGE_PROMPT), HumanMessage(f"Question: {state['input']}\n\n{answers}")],
        Ruling,
        request=RULING_REQUEST,
    )
    verdict = Verdict(rationale=working, **ruling.model_dump())
    return {"verdict": verdict, "output": verdict.final_answer}
