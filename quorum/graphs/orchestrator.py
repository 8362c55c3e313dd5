"""Orchestrator-worker: a planner plans, workers run the plan, a synthesizer merges.

The planner splits the goal into a task graph of steps for specialised workers:

    planner ─(invalid plan, repairs left)─> planner
       │
       └─Send per ready step─> worker ─> dispatch ─Send per ready step─> worker ...
                                            └─(all done)─> synthesizer

The valid plan's first wave goes out from the planner itself. `dispatch` is the join: it
runs once after every wave of workers and sends each step whose dependencies are all done,
so independent steps run in parallel as separate tasks. The join is a superstep of its own
because LangGraph routes from each task that ends: routed from the workers, a wave of n
would send the next wave n times. Each worker is a tool-use subgraph (brief -> act <-> tool
-> report), so its every model turn and tool call is checkpointed: a crash re-runs nothing
a worker had finished.
"""

from __future__ import annotations

from typing import Literal

from langgraph.graph import END, START
from langgraph.types import Send

from quorum.graphs.pattern import Pattern
from quorum.graphs.tool_loop import tool_loop
from quorum.nodes.planner import planner
from quorum.nodes.synthesizer import synthesizer
from quorum.nodes.workers import brief, report
from quorum.state import (
    OrchestratorInput,
    OrchestratorOutput,
    OrchestratorState,
    WorkerOutput,
    WorkerState,
    WorkerTask,
)


async def dispatch(state: OrchestratorState) -> dict:
    """Join point after each wave of workers; the routing below picks the next wave."""
    return {}


def route_after_planner(state: OrchestratorState) -> list[Send] | Literal["planner", "synthesizer"]:
    """Back to the planner until it gives a valid plan (it raises when out of repairs).

    A valid plan's first wave is sent from here: through `dispatch`, every worker would
    wait for one more synced checkpoint before its first model call.
    """
    return route_after_dispatch(state) if state.get("plan") else "planner"


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
                goal=state["input"],
            ),
        )
        for step in ready
    ]


worker = tool_loop(
    "worker",
    state=WorkerState,
    input_schema=WorkerTask,
    output_schema=WorkerOutput,
    brief=brief,
    finish=report,
)

builder = Pattern(
    "orchestrator",
    OrchestratorState,
    input_schema=OrchestratorInput,
    output_schema=OrchestratorOutput,
)
builder.add_agent(planner)
builder.add_node(dispatch)
builder.add_node("worker", worker)
builder.add_agent(synthesizer)
builder.add_edge(START, "planner")
builder.add_conditional_edges("planner", route_after_planner, ["planner", "worker", "synthesizer"])
builder.add_conditional_edges("dispatch", route_after_dispatch, ["worker", "synthesizer"])
builder.add_edge("worker", "dispatch")
builder.add_edge("synthesizer", END)

graph = builder.compile()
