"""Orchestrator-worker: a planner plans, workers run the plan, a synthesizer merges.

The planner splits the goal into a task graph of steps for specialised workers:

    planner ─(invalid plan, repairs left)─> planner
       │
    dispatch ─Send per ready step─> worker ─> dispatch ... ─(all done)─> synthesizer

`dispatch` is the join: it runs once after every wave of workers and sends each step whose
dependencies are all done, so independent steps run in parallel as separate tasks (each
checkpointed on its own: a crash re-runs only the workers that had not finished).
"""

from __future__ import annotations

from typing import Annotated, Literal

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from quorum.context import QuorumContext
from quorum.models import MODEL_RETRY
from quorum.nodes.planner import Plan, planner
from quorum.nodes.synthesizer import synthesizer
from quorum.nodes.workers import WorkerTask, worker
from quorum.state import QuorumState


def merge_results(left: dict[str, str] | None, right: dict[str, str] | None) -> dict[str, str]:
    """Reducer: each worker adds its own step's result."""
    return {**(left or {}), **(right or {})}


def append(left: list[str] | None, right: list[str] | None) -> list[str]:
    """Reducer: keep every repair request, so the count bounds the repairs."""
    return [*(left or []), *(right or [])]


class OrchestratorState(QuorumState, total=False):
    """State of an orchestrator run; `input` is the goal."""

    plan: Plan | None
    plan_feedback: Annotated[list[str], append]
    results: Annotated[dict[str, str], merge_results]


async def dispatch(state: OrchestratorState) -> dict:
    """Join point after each wave of workers; the routing below picks the next wave."""
    return {}


def route_after_planner(state: OrchestratorState) -> Literal["planner", "dispatch"]:
    """Back to the planner until it gives a valid plan (it raises when out of repairs)."""
    return "dispatch" if state.get("plan") else "planner"


def route_after_dispatch(state: OrchestratorState) -> list[Send] | Literal["synthesizer"]:
    """Send every step whose dependencies are done; synthesize when none are left."""
    plan = state["plan"]
    assert plan is not None
    done = state.get("results", {})
    ready = [
        step
        for step in plan.steps
        if step.id not in done and all(d in done for d in step.dependencies)
    ]
    if not ready:
        return "synthesizer"
    return [
        Send(
            "worker",
            WorkerTask(
                step_id=step.id,
                worker=step.worker,
                task=step.task,
                inputs={d: done[d] for d in step.dependencies},
            ),
        )
        for step in ready
    ]


builder = StateGraph(OrchestratorState, context_schema=QuorumContext)
builder.add_node(planner, retry_policy=MODEL_RETRY)
builder.add_node(dispatch)
# The worker takes its own Send payload (WorkerTask), not the graph state.
builder.add_node(worker, retry_policy=MODEL_RETRY)  # type: ignore[arg-type]
builder.add_node(synthesizer, retry_policy=MODEL_RETRY)
builder.add_edge(START, "planner")
builder.add_conditional_edges("planner", route_after_planner)
builder.add_conditional_edges("dispatch", route_after_dispatch, ["worker", "synthesizer"])
builder.add_edge("worker", "dispatch")
builder.add_edge("synthesizer", END)

graph = builder.compile(name="orchestrator")
