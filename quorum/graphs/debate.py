"""Debate: two debaters answer, critique each other and revise; a judge decides.

    moderator ─> debater_a ┐
              └> debater_b ┴─> moderator ─(next phase)─> ... ─(rounds done or agreed)─> judge

The two debaters run in parallel in every phase. The moderator is plain code: it advances
answer -> critique -> revise, counts rounds (default 1) and stops early when both debaters
hold the same answer (compared in code, `agreeing`): after their revisions, or already in
their openings (round 0: no critique, no revision; a round is 4 model calls of a question's
8 when each debater ends its working on an "Answer:" line).
"""

from __future__ import annotations

from typing import Literal

from langgraph.graph import END, START
from langgraph.runtime import Runtime

from quorum.context import QuorumContext
from quorum.graphs.pattern import Pattern
from quorum.nodes.debate import agreeing, debater_a, debater_b, judge
from quorum.state import DebateInput, DebateOutput, DebateState


async def moderator(state: DebateState, runtime: Runtime[QuorumContext]) -> dict:
    """Advance the debate to its next phase."""
    phase = state.get("phase")
    if phase is None:
        return {"phase": "answer", "round": 0}
    if phase == "answer":
        if agreeing(state):
            # Critique and revision would argue over nothing: the judge checks the one answer.
            return {"phase": "judge", "agreement": {"a": True, "b": True}}
        return {"phase": "critique", "round": 1}
    if phase == "critique":
        return {"phase": "revise"}
    agreed = agreeing(state)
    agreement = {"a": agreed, "b": agreed}
    if agreed or state["round"] >= runtime.context.max_rounds:
        return {"phase": "judge", "agreement": agreement}
    return {"phase": "critique", "round": state["round"] + 1, "agreement": agreement}


def route_after_moderator(
    state: DebateState,
) -> list[Literal["debater_a", "debater_b"]] | Literal["judge"]:
    """Both debaters take the phase, or the judge decides."""
    return "judge" if state["phase"] == "judge" else ["debater_a", "debater_b"]


builder = Pattern("debate", DebateState, input_schema=DebateInput, output_schema=DebateOutput)
builder.add_node(moderator)
builder.add_agent(debater_a)
builder.add_agent(debater_b)
builder.add_agent(judge)
builder.add_edge(START, "moderator")
builder.add_conditional_edges(
    "moderator", route_after_moderator, ["debater_a", "debater_b", "judge"]
)
builder.add_edge(["debater_a", "debater_b"], "moderator")
builder.add_edge("judge", END)

graph = builder.compile()
