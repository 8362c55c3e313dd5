"""The planner agent: turns a goal into a validated plan of steps for the workers.

The planner plans and delegates; it never does a step itself. It thinks the plan through in
plain text first, then writes it in the plan schema (`ask_reasoned`). Its plan is checked here
(known workers, unique ids, dependencies that exist, no cycles, not too long) and an invalid
plan goes back to it with the problems listed, a bounded number of times.
"""

from __future__ import annotations

import functools
import re
from difflib import SequenceMatcher
from graphlib import CycleError, TopologicalSorter
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from quorum.context import QuorumContext
from quorum.errors import PlanError
from quorum.models import ask_reasoned, current_endpoint, stated
from quorum.nodes.workers import WORKERS
from quorum.state import OrchestratorState, Plan, PlanStep

PLANNER_PROMPT = """You are the planner of a team of agents. Break the user's goal into steps
and assign each step to one worker. You never do a step yourself.

Workers:
{workers}

Rules:
- Give each step a short unique id (s1, s2, ...), one worker from the list, and a
  self-contained task in your own words, saying what to find, compute or write for this
  goal: the worker sees only its task and the results of its dependencies. A worker's
  description above says what it can do; it is never a task.
- List in `dependencies` the ids of the steps whose results a step needs; steps with no
  dependencies between them run at the same time, so only add the ones that are needed.
- The steps together do the whole goal: the final answer is only put together from their
  results, so a part no step does is never done.
- Use at most {max_steps} steps. Fewer is better when it does the job; one step may do it all.
First think the plan through in plain text, in a few sentences: what the goal needs, which
worker (by name) takes each part and why its description fits, and which parts need the
results of others. Do not work the goal out yourself. Write no JSON yet."""

# With one step allowed, the planner chooses who does the goal, and `whole_goal` gives that
# worker the goal itself. Asked to break a word problem into steps regardless, a 1.5B planner
# made the first step "find out how many apples Mia has" and so chose the researcher for 20
# of 30 problems, which searched the documents for a story's numbers; the analyst, given 10,
# computed 7 right. So a one-step plan is asked for as that choice, of the goal as a whole.
# Choosing, it sent 8 of 30 stories to the researcher, each reasoned as "the total number of
# cookies baked is not directly given in the goal, so it must be looked up": the answer
# sought was read as a missing fact, hence the sentence on what counts.
CHOOSER_PROMPT = """You are the planner of a team of agents. One worker will be given the
user's whole goal and do all of it; you choose which. You never do it yourself.

Workers:
{workers}

First think in plain text, in a few sentences: what the goal as a whole asks for (facts that
must be looked up because the goal does not give them, an answer worked out from what the
goal gives, or prose written from it) and which worker's description fits. The answer itself
is never in the goal: what counts is whether the goal states what it is worked out from.
Do not break the goal into steps and do not work it out yourself. End with one last line:
"Worker: " and the name of the worker you choose."""

CHOICE_QUESTION = "Which worker should do this goal?\nGoal: {goal}"

CHOICE_REQUEST = """Now write your choice as JSON: a plan of one step, with id s1, the worker
you chose, the goal as its task, and no dependencies."""

# The limit is said again here, with what to do about it. Measured, it did not help: a 1.5B
# planner allowed one step that had planned four in its thinking wrote the same first step
# ("Compute 10 * 16"), byte for byte, with or without it; `whole_goal` is what makes a
# one-step plan do the goal. It is kept as the plain statement of the rule for larger plans.
PLAN_REQUEST = """Now write the plan you settled on as JSON: each step with its id, its worker,
its task in full and its dependencies. Use at most {max_steps} steps: if you thought of more,
merge them into fewer, larger tasks so that the steps still do the whole goal."""

REPAIR_TEMPLATE = """Your previous plan was invalid:
{plan}
Problems:
{problems}
Send a corrected plan."""


STEP_ID = "^s[0-9]{1,2}$"

COPIED = 0.8
"""How alike a task and its worker's description may be before the task counts as a copy."""


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def copies_description(task: str, description: str) -> bool:
    """Whether `task` is its worker's description (give or take a word form), not a task.

    Writing the plan as JSON, a 1.5B planner filled 11 of 20 tasks with the researcher's
    description ("Find and check facts, look things up and compute with tools"), and the
    researcher, not told what to compute, answered "I could not find a trusted source".
    """
    return SequenceMatcher(None, _words(task), _words(description)).ratio() >= COPIED


def validate_plan(plan: Plan, workers: dict[str, str], max_steps: int) -> list[str]:
    """Every problem with `plan`; an empty list means it can run."""
    problems: list[str] = []
    if not plan.steps:
        problems.append("the plan has no steps")
    if len(plan.steps) > max_steps:
        problems.append(f"the plan has {len(plan.steps)} steps; the most allowed is {max_steps}")
    ids = [step.id for step in plan.steps]
    for step_id in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(f"step id {step_id!r} is used more than once")
    for step in plan.steps:
        if step.worker not in workers:
            problems.append(
                f"step {step.id!r} names unknown worker {step.worker!r}; "
                f"choose one of: {', '.join(workers)}"
            )
        elif copies_description(step.task, workers[step.worker]):
            problems.append(
                f"step {step.id!r}'s task repeats what the {step.worker} can do; say what "
                "this step must find, compute or write for the goal"
            )
        for dependency in step.dependencies:
            if dependency not in ids:
                problems.append(f"step {step.id!r} depends on missing step {dependency!r}")
    try:
        TopologicalSorter({s.id: s.dependencies for s in plan.steps}).prepare()
    except CycleError as error:
        cycle = " -> ".join(error.args[1])
        problems.append(f"the dependencies form a cycle: {cycle}")
    return list(dict.fromkeys(problems))  # one line per problem, even if steps repeat it


def plan_json_schema(workers: list[str], max_steps: int, *, positional: bool) -> dict[str, Any]:
    """The plan schema narrowed for this run: real worker names, short ids, a size bound.

    Built once per set of arguments (the positional form grows with the square of
    `max_steps`: tens of milliseconds at 50) and shared: read it, never change it.

    A model constrained by it (strict mode on OpenAI) cannot name an unknown worker.
    `positional` spells out every step position for a grammar (llama.cpp): step k has id
    `sk` and may depend only on earlier steps, so duplicate ids, missing dependencies and
    cycles cannot be generated at all. `validate_plan` still checks every plan.
    """
    return _plan_json_schema(tuple(workers), max_steps, positional)


@functools.lru_cache(maxsize=32)
def _plan_json_schema(workers: tuple[str, ...], max_steps: int, positional: bool) -> dict[str, Any]:
    schema = Plan.model_json_schema()
    step = schema["$defs"].pop("PlanStep")
    step["properties"]["worker"]["enum"] = list(workers)
    if not positional:
        step["properties"]["id"]["pattern"] = STEP_ID
        step["properties"]["dependencies"]["items"]["pattern"] = STEP_ID
        schema["$defs"]["PlanStep"] = step
        schema["properties"]["steps"] |= {"minItems": 1, "maxItems": max_steps}
        return schema

    def at(position: int) -> dict[str, Any]:
        earlier = [f"s{k}" for k in range(1, position)] or ["-"]
        properties = step["properties"] | {
            "id": {"const": f"s{position}"},
            "dependencies": {
                "type": "array",
                "items": {"type": "string", "enum": earlier},
                "maxItems": position - 1,
            },
        }
        return step | {"properties": properties}

    schema["properties"]["steps"] = {
        "anyOf": [
            {"type": "array", "prefixItems": [at(k) for k in range(1, size + 1)]}
            for size in range(1, max_steps + 1)
        ]
    }
    del schema["$defs"]
    return schema


def whole_goal(plan: Plan, goal: str) -> Plan:
    """A one-step plan whose step is given the goal itself; the planner chose who does it.

    Allowed one step, a 1.5B planner still planned four in its reasoning, then wrote the
    first ("Compute 10 * 16"): that step did a fifth of the goal, no step did the rest, and
    the synthesizer made up an answer. A single step can only be the whole goal.
    """
    [step] = plan.steps
    return Plan(steps=[step.model_copy(update={"task": goal, "dependencies": []})])


def chosen(working: str, workers: list[str], goal: str) -> Plan | None:
    """The one-step plan a chooser's "Worker:" line names; None when it names no one worker.

    Asked for its choice as a plan in JSON, a 1.5B planner that had computed a sum instead
    of choosing wrote the first worker the schema lists, 30 times of 30: the line it ends
    its own reasoning on is its choice, when it made one.
    """
    line = stated(working, "Worker")
    named = [w for w in workers if re.search(rf"\b{re.escape(w)}\b", (line or "").lower())]
    if len(named) != 1:
        return None
    return Plan(steps=[PlanStep(id="s1", worker=named[0], task=goal, dependencies=[])])


async def planner(state: OrchestratorState, runtime: Runtime[QuorumContext]) -> dict:
    """Plan the goal; return a valid plan, or the problems for another attempt."""
    context = runtime.context
    workers = {name: worker.description for name, worker in WORKERS.items()}
    choosing = context.max_plan_steps == 1
    prompt, request, asked = (
        (CHOOSER_PROMPT, CHOICE_REQUEST, CHOICE_QUESTION)
        if choosing
        else (PLANNER_PROMPT, PLAN_REQUEST, "Goal: {goal}")
    )
    messages = [
        SystemMessage(
            prompt.format(
                workers="\n".join(f"- {name}: {about}" for name, about in workers.items()),
                max_steps=context.max_plan_steps,
            )
        ),
        HumanMessage(asked.format(goal=state["input"])),
        *(HumanMessage(feedback) for feedback in state.get("plan_feedback", [])[-1:]),
    ]
    _, plan = await ask_reasoned(
        "planner",
        context,
        messages,
        Plan,
        request=request.format(max_steps=context.max_plan_steps),
        json_schema=plan_json_schema(
            list(workers),
            context.max_plan_steps,
            positional=current_endpoint().structured == "json_object",
        ),
        read=(lambda working: chosen(working, list(workers), state["input"])) if choosing else None,
    )
    if choosing and len(plan.steps) == 1:
        plan = whole_goal(plan, state["input"])
    problems = validate_plan(plan, workers, context.max_plan_steps)
    if not problems:
        return {"plan": plan}
    repairs = len(state.get("plan_feedback", []))
    if repairs >= context.max_plan_repairs:
        raise PlanError(
            f"the planner gave no valid plan after {repairs} repairs: {'; '.join(problems)}",
            hint="rephrase the goal, raise max_plan_repairs, or use a stronger planner model",
        )
    feedback = REPAIR_TEMPLATE.format(
        plan=plan.model_dump_json(), problems="\n".join(f"- {p}" for p in problems)
    )
    return {"plan_feedback": [feedback]}
