"""The worker registry: specialised agents the orchestrator's planner delegates steps to.

Each worker has its own prompt, its own model (`models` in the run context, keyed by the
worker's name) and its own tools. A worker sees the run's goal, its step's task and the
results of the steps it depends on, never the whole run's state. A worker runs as a tool-use
subgraph (`quorum.graphs.tool_loop`): `brief` sets it up, `report` hands its answer back.
"""

from __future__ import annotations

from dataclasses import dataclass

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from quorum.context import QuorumContext
from quorum.state import WorkerState, WorkerTask, step_label
from quorum.tools import tools_for
from quorum.tools.contract import is_irreversible, spotlight

# "Looked up or computed" in one breath: on 9 of 30 arithmetic goals a 1.5B researcher searched
# the documents for the sum, found nothing and answered that it found no trusted source.
RESEARCHER_PROMPT = """You are the researcher on a team. Gather the facts your task asks for.
Use your tools when a fact must be looked up; do not guess numbers or dates. Anything that
is worked out from numbers you are given, compute with the calculator: searching will not
find it. Answer with the facts you found, each with where it came from."""

# "Compute every number with the calculator" sent a 1.5B analyst comparing two databases to
# the calculator with "2+2": a task with nothing to work out is told it needs no call.
ANALYST_PROMPT = """You are the analyst on a team. Reason carefully over the material you are
given: compare, weigh trade-offs and draw conclusions. Whenever your task needs a number
worked out, compute it with the calculator, one call per expression, never in your head; a
task with no number to work out needs no calculator. Show the key reasoning briefly, then
state your conclusion."""

WRITER_PROMPT = """You are the writer on a team. Turn the material you are given into clear,
well-organised prose for the reader the task names. Keep every fact from the material; add
none of your own."""

STEP_TEMPLATE = """{goal}Your task: {task}
{inputs}
Now answer your task{yourself} in at most 150 words, and end with your conclusion."""

# After the material, where a small model still reads it: without it a 1.5B analyst copied
# the step before it out whole (about 400 tokens a step at a few tokens a second).
BUILD_ON_INPUTS = " yourself: build on the results above rather than copy them,"


@dataclass(frozen=True)
class Worker:
    """A specialised agent the planner can assign steps to."""

    name: str
    description: str
    """What the planner reads to choose a worker."""
    prompt: str
    tools: tuple[str, ...] | None = ()
    """The tools it is offered unless the run's `agent_tools` grants it others; None: every
    tool without side effects (`quorum.tools.tools_for`, when a step runs)."""


WORKERS: dict[str, Worker] = {
    worker.name: worker
    for worker in (
        # "Finds and checks facts" drew a 1.5B planner to the researcher for "how many
        # cookies were baked?", a story whose numbers are all given: the line between the
        # two is whether the goal gives what the answer is worked out from.
        Worker(
            "researcher",
            "looks up facts the goal does not give, with search tools, and checks them",
            RESEARCHER_PROMPT,
            tools=None,
        ),
        # The division of labour a small planner can read: whatever is worked out from
        # numbers goes to the analyst, whose only tool is the calculator.
        Worker(
            "analyst",
            "works answers out from what the goal gives: computes with the calculator, "
            "compares, weighs and reasons",
            ANALYST_PROMPT,
            tools=("calculator",),
        ),
        Worker("writer", "writes clear prose from given material", WRITER_PROMPT),
    )
}


async def brief(task: WorkerTask, runtime: Runtime[QuorumContext]) -> dict:
    """Set up the worker a plan step names: its prompt, its task and inputs, its tools."""
    spec = WORKERS[task["worker"]]
    tools = await tools_for(spec.name, runtime.context, spec.tools)
    # Another step's result may carry what its agent read from outside: for a worker that can
    # act irreversibly, it is untrusted data too, so that its calls wait for a person.
    fence = any(is_irreversible(tool) for tool in tools)
    inputs = "".join(
        f"\nResult of step {step_id}:\n"
        f"{spotlight(f'step {step_id}', result) if fence else result}\n"
        for step_id, result in task["inputs"].items()
    )
    goal = f"The team's goal: {task['goal']}\n" if task.get("goal") else ""
    return {
        "agent": spec.name,
        "label": step_label(task) or spec.name,
        "tools": [tool.name for tool in tools],
        "max_rounds": runtime.context.max_tool_calls,
        "messages": [
            SystemMessage(spec.prompt),
            HumanMessage(
                STEP_TEMPLATE.format(
                    goal=goal,
                    task=task["task"],
                    inputs=inputs,
                    yourself=BUILD_ON_INPUTS if inputs else ",",
                )
            ),
        ],
    }


async def report(state: WorkerState) -> dict:
    """Hand the worker's answer back as its step's result."""
    return {"results": {state["step_id"]: state["messages"][-1].text}}
