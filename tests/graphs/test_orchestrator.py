"""The orchestrator: plan validation and repair, and parallel workers."""

from __future__ import annotations

import pytest

import quorum
from quorum.context import QuorumContext
from quorum.errors import RunFailed
from quorum.nodes.planner import Plan, validate_plan
from quorum.testing import Script, plan_of, stating

WORKERS = {"researcher": "", "analyst": "", "writer": ""}


def problems(*steps: tuple[str, str, list[str]], max_steps: int = 8) -> list[str]:
    return validate_plan(Plan.model_validate(plan_of(*steps)), WORKERS, max_steps)


def test_valid_plan_has_no_problems() -> None:
    assert problems(("s1", "researcher", []), ("s2", "writer", ["s1"])) == []


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([("a", "researcher", ["b"]), ("b", "analyst", ["a"])], "cycle: "),
        ([("a", "researcher", ["a"])], "cycle: a -> a"),
        ([("a", "poet", [])], "unknown worker 'poet'"),
        ([("a", "researcher", ["zz"])], "depends on missing step 'zz'"),
        ([("a", "researcher", []), ("a", "writer", [])], "step id 'a' is used more than once"),
        ([], "the plan has no steps"),
        ([(f"s{i}", "analyst", []) for i in range(9)], "the plan has 9 steps; the most allowed"),
    ],
)
def test_invalid_plans_are_named(steps: list, expected: str) -> None:
    assert any(expected in p for p in problems(*steps)), problems(*steps)


async def test_planner_repairs_an_invalid_plan(script: Script) -> None:
    plans = iter(
        [
            plan_of(("a", "researcher", ["b"]), ("b", "poet", ["a"])),
            plan_of(("a", "researcher", []), ("b", "writer", ["a"])),
        ]
    )
    script.on("planner", lambda agent, messages: next(plans) if stating(messages) else "Hmm.")

    result = await quorum.run("orchestrator", "Goal")

    assert result.status == "completed"
    assert script.count("planner") == 4  # think, write; then think again on the feedback, write
    feedback = script.calls[2].messages[-1].text
    assert "unknown worker 'poet'" in feedback and "cycle" in feedback
    assert result.usage["planner"]["calls"] == 4


async def test_planner_out_of_repairs_ends_with_clear_error(script: Script) -> None:
    script.on("planner", lambda agent, messages: plan_of(("a", "researcher", ["missing"])))

    with pytest.raises(RunFailed) as failure:
        await quorum.run("orchestrator", "Goal", context=QuorumContext(max_plan_repairs=1))

    assert failure.value.agent == "planner"
    assert "no valid plan after 1 repairs" in str(failure.value)
    assert "depends on missing step 'missing'" in str(failure.value)
    assert script.count("planner") == 4
    thread = await quorum.get_thread(failure.value.thread_id)
    assert thread.status == "failed"


async def test_planner_never_runs_a_step(script: Script) -> None:
    await quorum.run("orchestrator", "Goal")

    planner_calls = [c for c in script.calls if c.agent == "planner"]
    assert len(planner_calls) == 2  # it thinks, then writes the plan
    # Each step was run by its own worker agent, not by the planner.
    assert [c.agent for c in script.calls[2:4]] in (
        ["researcher", "analyst"],
        ["analyst", "researcher"],
    )


async def test_independent_steps_run_in_parallel(script: Script) -> None:
    # Long enough that a loaded machine (the suite's other worker) still starts all eight
    # workers while the first waits for its reply: 0.2 s was not, once.
    script.delay = 1.0
    script.on("planner", lambda a, m: plan_of(*[(f"s{i}", "analyst", []) for i in range(8)]))

    await quorum.run("orchestrator", "Goal", context=QuorumContext(max_plan_steps=8))

    workers = [c for c in script.calls if c.agent == "analyst"]
    assert len(workers) == 8
    # Every worker call started before any of them finished: all eight overlapped.
    assert max(c.start for c in workers) < min(c.end for c in workers)


async def test_dependent_step_waits_for_its_dependencies(script: Script) -> None:
    script.delay = 0.05
    await quorum.run("orchestrator", "Goal")

    by_agent = {c.agent: c for c in script.calls}
    assert by_agent["writer"].start >= max(by_agent["researcher"].end, by_agent["analyst"].end)


async def test_the_answer_says_each_paragraph_once(script: Script) -> None:
    """A small model copies a paragraph under a second heading now and then: the copy goes."""
    trade_offs = "- **SQLite**: one file,\n  no server.\n- **PostgreSQL**: a server."
    written = (
        f"**Recommendation:** SQLite.\n\n{trade_offs}\n\n**Trade-offs:**\n\n"
        f"{trade_offs.upper()}\n\nWhen it grows, PostgreSQL."
    )
    script.on("synthesizer", lambda agent, messages: written)

    result = await quorum.run("orchestrator", "SQLite or PostgreSQL?")

    assert result.output == (
        f"**Recommendation:** SQLite.\n\n{trade_offs}\n\n**Trade-offs:**\n\nWhen it grows, "
        "PostgreSQL."
    )


@pytest.mark.parametrize(
    ("goal", "chooses"),
    [
        ("Compare SQLite and PostgreSQL as the checkpoint store for a small team", True),
        ("Should a five-person startup write its web backend in Python or Go?", True),
        ("Redis vs. RabbitMQ for background emails", True),
        ("Decide whether to self-host an open-weights model", True),
        ("Explain how to roll out a database schema change without downtime", False),
        ("Write a one-page guide to retrying HTTP requests safely", False),
    ],
)
async def test_only_a_choice_is_answered_in_the_recommendation_outline(
    script: Script, goal: str, chooses: bool
) -> None:
    """The outline is picked from the goal's wording: a 1.5B model told "if the goal asks to
    choose" filled it for an "explain how" goal too."""
    asked: list[str] = []
    script.on("synthesizer", lambda agent, messages: asked.append(messages[-1].content) or "A.")

    await quorum.run("orchestrator", goal)

    [prompt] = asked
    assert prompt.startswith(f"Goal: {goal}\n")
    assert ("**Recommendation:**" in prompt) is chooses
    assert ("do not work anything out again" in prompt) is not chooses


@pytest.mark.parametrize(
    "task",
    [
        "Find and check facts, looks things up and computes with tools",
        "find and check facts, look things up and compute with tools",
    ],
)
def test_a_task_that_repeats_its_workers_description_is_sent_back(task: str) -> None:
    """A 1.5B planner copied the researcher's description in as its task in 11 of 20 plans."""
    plan = Plan.model_validate(
        {"steps": [{"id": "s1", "worker": "researcher", "task": task, "dependencies": []}]}
    )
    described = {"researcher": "finds and checks facts, looks things up and computes with tools"}

    [problem] = validate_plan(plan, described, 3)

    assert "step 's1''s task repeats what the researcher can do" in problem
    for real in ("Compute 19 * 28", "Find and check facts about SQLite's locking, with tools"):
        ok = plan.model_copy(update={"steps": [plan.steps[0].model_copy(update={"task": real})]})
        assert validate_plan(ok, described, 3) == []


async def test_each_worker_is_offered_its_own_tools_unless_the_run_grants_others(
    script: Script,
) -> None:
    """The researcher has the read-only tools, the analyst the calculator, the writer none;
    a grant reaches any worker."""
    script.on(
        "planner",
        lambda agent, messages: plan_of(
            ("a", "researcher", []), ("b", "analyst", []), ("c", "writer", [])
        ),
    )
    offered = lambda: {call.agent: call.tools for call in script.calls}  # noqa: E731

    await quorum.run("orchestrator", "Goal")
    tools = offered()
    assert tools["analyst"] == ["calculator"] and tools["writer"] == []
    assert "calculator" in tools["researcher"] and "write_file" not in tools["researcher"]

    script.calls.clear()
    await quorum.run(
        "orchestrator", "Goal", context=QuorumContext(agent_tools={"writer": ["current_time"]})
    )
    assert offered()["writer"] == ["current_time"]


async def test_a_plan_of_one_step_is_given_the_whole_goal(script: Script) -> None:
    """Allowed one step, a small planner wrote the first of the four it had in mind."""
    script.on(
        "planner",
        lambda agent, messages: plan_of(("s1", "analyst", [])) if stating(messages) else "Hmm.",
    )
    goal = "What is the result of 3+10*16+30-16*20?"

    result = await quorum.run("orchestrator", goal, context=QuorumContext(max_plan_steps=1))

    assert result.status == "completed"
    analyst = [call for call in script.calls if call.agent == "analyst"]
    assert f"Your task: {goal}\n" in analyst[0].messages[-1].text
    # Its result answers the goal as it stands: no synthesizer rewrites it.
    assert "synthesizer" not in {call.agent for call in script.calls}
    assert result.output == result.values["results"]["s1"]


@pytest.mark.parametrize(("max_steps", "asked"), [(1, "you choose which"), (3, "Break the")])
async def test_a_planner_allowed_one_step_is_asked_to_choose_a_worker_not_to_break_the_goal(
    script: Script, max_steps: int, asked: str
) -> None:
    """Asked for steps, a small planner routed a story's first step ("find out how many
    apples Mia has") to the researcher, and so the whole word problem to a search."""
    script.on(
        "planner",
        lambda agent, messages: plan_of(("s1", "analyst", [])) if stating(messages) else "Hmm.",
    )

    await quorum.run(
        "orchestrator", "Mia has 5 apples...", context=QuorumContext(max_plan_steps=max_steps)
    )

    thinking, stating_plan = [call for call in script.calls if call.agent == "planner"]
    assert asked in thinking.messages[0].text
    assert ("you chose" in stating_plan.messages[-1].text) == (max_steps == 1)


@pytest.mark.parametrize(
    ("line", "calls", "worker"),
    [
        ("Worker: analyst", 1, "analyst"),
        ("**Worker:** The Analyst.", 1, "analyst"),
        ("Worker: researcher or analyst", 2, "writer"),  # no one worker: the schema decides
        ("The result is 48.", 2, "writer"),  # it worked the sum out instead of choosing
    ],
)
async def test_a_chooser_s_worker_line_is_its_choice(
    script: Script, line: str, calls: int, worker: str
) -> None:
    """Asked for its choice in JSON, a 1.5B planner that had computed a sum instead wrote the
    first worker the schema lists, 30 times of 30."""
    script.on(
        "planner",
        lambda agent, messages: (
            plan_of(("s1", "writer", [])) if stating(messages) else f"It is a sum.\n{line}"
        ),
    )
    goal = "What is 3+10*16?"

    result = await quorum.run("orchestrator", goal, context=QuorumContext(max_plan_steps=1))

    [step] = result.values["plan"].steps
    assert (step.worker, step.task, script.count("planner")) == (worker, goal, calls)
    asked = script.calls[0].messages[1].text
    assert asked == f"Which worker should do this goal?\nGoal: {goal}"


async def test_a_one_step_plan_for_a_choice_is_still_shaped_into_a_recommendation(
    script: Script,
) -> None:
    script.on("planner", lambda agent, messages: plan_of(("s1", "analyst", [])))

    await quorum.run(
        "orchestrator",
        "Should we use SQLite or PostgreSQL?",
        context=QuorumContext(max_plan_steps=1),
    )

    [synthesizer] = [call for call in script.calls if call.agent == "synthesizer"]
    assert "**Recommendation:**" in synthesizer.messages[-1].text


async def test_the_first_wave_goes_out_from_the_planner_with_no_join_before_it(
    script: Script,
) -> None:
    done = await quorum.run("orchestrator", "Goal")

    steps = [entry.agents for entry in (await quorum.get_thread(done.thread_id)).history]
    # The default scripted plan: researcher and analyst at once, then the writer.
    assert steps[:2] == [["planner"], ["worker", "worker"]]
    # The join runs once after each wave, never between the plan and its first wave.
    assert steps.count(["dispatch"]) == 2
    assert steps[-1] == ["synthesizer"]
