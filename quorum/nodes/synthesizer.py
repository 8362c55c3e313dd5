"""The synthesizer agent: merges the workers' results into the orchestrator's final answer."""

from __future__ import annotations

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from quorum.answers import said_once
from quorum.context import QuorumContext
from quorum.models import ask
from quorum.state import OrchestratorState

SYNTHESIZER_PROMPT = """You write the final answer to the user's goal from the results of a
team's steps. Use only what the results say; where they disagree, say so. Say each thing once."""

# What to write comes after the results, where a small model still reads it: put first (in
# the system prompt), a 1.5B model copied the results out whole, 673 tokens with the same
# paragraphs twice and no choice made; asked here, it fills the outline in 153.
RESULTS_TEMPLATE = """Goal: {goal}

Results, step by step:
{results}

Now answer the goal in markdown, in at most 150 words. Do not copy the results out. If the
goal asks to compare or choose, fill in this outline:

**Recommendation:** <the one option you recommend for this case>, because <the main reason>.

**Why:**
- <reason>
- <reason>

**When the other option is better:** <one sentence>"""


async def synthesizer(state: OrchestratorState, runtime: Runtime[QuorumContext]) -> dict:
    """Write the final answer from the plan's results."""
    plan = state["plan"]
    assert plan is not None, "the synthesizer runs only after a valid plan"
    results = "\n\n".join(
        f"## {step.id} ({step.worker}): {step.task}\n{state['results'][step.id]}"
        for step in plan.steps
    )
    reply = await ask(
        "synthesizer",
        runtime.context,
        [
            SystemMessage(SYNTHESIZER_PROMPT),
            HumanMessage(RESULTS_TEMPLATE.format(goal=state["input"], results=results)),
        ],
    )
    return {"output": said_once(reply.text)}
