"""The synthesizer agent: merges the workers' results into the orchestrator's final answer."""

from __future__ import annotations

import re

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from quorum.answers import said_once
from quorum.context import QuorumContext
from quorum.models import ask
from quorum.state import OrchestratorState, Plan

SYNTHESIZER_PROMPT = """You write the final answer to the user's goal from the results of a
team's steps. Use only what the results say; where they disagree, say so. Say each thing once."""

# What to write comes after the results, where a small model still reads it: put first (in
# the system prompt), a 1.5B model copied the results out whole, 673 tokens with the same
# paragraphs twice and no choice made; asked here, it fills the outline in 153.
RESULTS_TEMPLATE = """Goal: {goal}

Results, step by step:
{results}

Now answer the goal in markdown, in at most 150 words. Do not copy the results out.
{shape}"""

# The shape is chosen here, from the goal's wording, not left to the model: told "if the goal
# asks to choose, fill in this outline", a 1.5B model filled it for an "explain how" goal
# too, with a "when the other option is better" that named no other option.
CHOICE_SHAPE = """Fill in this outline:

**Recommendation:** <the one option you recommend for this case>, because <the main reason>.

**Why:**
- <reason>
- <reason>

**When the other option is better:** <one sentence>"""

# "Then the steps or reasons that support it" alone made it work an arithmetic goal out
# again, and state its own wrong sum over the researcher's calculated one. Asking for the
# answer last did not stop that (4 of 21 right results still overruled, on 30 questions),
# and on an "explain how" goal it copied the results out whole, headings and all (105 s);
# asked for it "in your own words", it wrote one empty line.
ANSWER_SHAPE = """Start with the answer the results reach, as they state it, in one or two
sentences; do not work anything out again. Then the steps or reasons from the results that
support it, each said once."""

_CHOICE = re.compile(
    r"\b(or|vs\.?|versus|compare|comparing|choose|choosing|choice|between|decide|whether|which"
    r"|should|pick|recommend)\b",
    re.IGNORECASE,
)


def asks_to_choose(goal: str) -> bool:
    """Whether `goal` reads as a choice between options (its answer is a recommendation)."""
    return _CHOICE.search(goal) is not None


def answers_the_goal(plan: Plan, goal: str) -> bool:
    """Whether the plan is one step whose task was the goal itself (`planner.whole_goal`).

    Its result already answers the goal, so it is the output as it stands. Rewritten by the
    synthesizer, 4 of 21 right results on 30 arithmetic questions came out wrong: a 1.5B model
    worked the sum out again and stated its own. A choice goal is still shaped into a
    recommendation: the worker was not asked for that outline.
    """
    return len(plan.steps) == 1 and plan.steps[0].task == goal and not asks_to_choose(goal)


async def synthesizer(state: OrchestratorState, runtime: Runtime[QuorumContext]) -> dict:
    """Write the final answer from the plan's results."""
    plan = state["plan"]
    assert plan is not None, "the synthesizer runs only after a valid plan"
    if answers_the_goal(plan, state["input"]):
        return {"output": said_once(state["results"][plan.steps[0].id])}
    results = "\n\n".join(
        f"## {step.id} ({step.worker}): {step.task}\n{state['results'][step.id]}"
        for step in plan.steps
    )
    reply = await ask(
        "synthesizer",
        runtime.context,
        [
            SystemMessage(SYNTHESIZER_PROMPT),
            HumanMessage(
                RESULTS_TEMPLATE.format(
                    goal=state["input"],
                    results=results,
                    shape=CHOICE_SHAPE if asks_to_choose(state["input"]) else ANSWER_SHAPE,
                )
            ),
        ],
    )
    return {"output": said_once(reply.text)}
