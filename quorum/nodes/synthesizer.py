"""The synthesizer agent: merges the workers' results into the orchestrator's final answer."""

from __future__ import annotations

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from quorum.answers import said_once
from quorum.context import QuorumContext
from quorum.models import ask
from quorum.state import OrchestratorState

SYNTHESIZER_PROMPT = """You write the final answer to the user's goal from the results of a
team's steps. Answer the goal itself, in markdown:
- If the goal asks to compare or choose, start with your recommendation in one sentence,
  naming the option you recommend; then the reasons for it; then the trade-offs, saying when
  the other option would be the better choice.
- Use only what the results say; where they disagree, say so.
- Say each thing once: no repeated paragraphs, no closing summary that restates the answer,
  no filler."""

RESULTS_TEMPLATE = """Goal: {goal}

Results, step by step:
{results}"""


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
