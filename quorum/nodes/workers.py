"""The worker registry: specialised agents the orchestrator's planner delegates steps to.

Each worker has its own prompt, its own model (`models` in the run context, keyed by the
worker's name) and its own tools. A worker sees only its step's task and the results of the
steps it depends on, never the whole run's state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from langchain_core.messages import AnyMessage, HumanMessage, SystemMessage
from langchain_core.tools import BaseTool
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from quorum.context import QuorumContext
from quorum.nodes.tool_use import use_tools
from quorum.tools import default_tools

RESEARCHER_PROMPT = """You are the researcher on a team. Gather the facts your task asks for.
Use your tools when a fact must be looked up or computed; do not guess numbers or dates.
Answer with the facts you found, each with where it came from."""

ANALYST_PROMPT = """You are the analyst on a team. Reason carefully over the material you are
given: compare, weigh trade-offs, compute and draw conclusions. Show the key reasoning
briefly, then state your conclusion."""

WRITER_PROMPT = """You are the writer on a team. Turn the material you are given into clear,
well-organised prose for the reader the task names. Keep every fact from the material; add
none of your own."""

STEP_TEMPLATE = """Your task: {task}
{inputs}"""


@dataclass(frozen=True)
class Worker:
    """A specialised agent the planner can assign steps to."""

    name: str
    description: str
    """What the planner reads to choose a worker."""
    prompt: str
    tools: Callable[[], list[BaseTool]] = field(default=list)
    """Built when a step runs, never at import time."""


WORKERS: dict[str, Worker] = {
    worker.name: worker
    for worker in (
        Worker(
            "researcher",
            "finds and checks facts, looks things up and computes with tools",
            RESEARCHER_PROMPT,
            default_tools,
        ),
        Worker("analyst", "compares, weighs and reasons over given material", ANALYST_PROMPT),
        Worker("writer", "writes clear prose from given material", WRITER_PROMPT),
    )
}


class WorkerTask(TypedDict):
    """What one worker is sent: its step and its dependencies' results, nothing else."""

    step_id: str
    worker: str
    task: str
    inputs: dict[str, str]
    """Results of the steps this one depends on, by step id."""


async def worker(task: WorkerTask, runtime: Runtime[QuorumContext]) -> dict:
    """Run one plan step on the worker it names."""
    spec = WORKERS[task["worker"]]
    inputs = "".join(
        f"\nResult of step {step_id}:\n{result}\n" for step_id, result in task["inputs"].items()
    )
    messages: list[AnyMessage] = [
        SystemMessage(spec.prompt),
        HumanMessage(STEP_TEMPLATE.format(task=task["task"], inputs=inputs)),
    ]
    _, reply, usage = await use_tools(spec.name, runtime.context, messages, spec.tools())
    return {"results": {task["step_id"]: reply.text}, "usage": usage}
