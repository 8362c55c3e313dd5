"""What one step costs: Quorum's graphs against raw LangGraph, without and with durable state.

Per model call for ReAct (run time over the run's model calls), per run for the orchestrator
with four workers; then the orchestrator fanning out to 16 workers whose model takes 200 ms,
durable, against the critical path (planner, one worker, synthesizer); then a run through
`quorum.run()` against the compiled graph it runs.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from bench.rows import Row, Target, interleaved, median, timed
from bench.runs import Databases, quorum_graph, run_quorum, run_raw, stock_saver
from bench.shapes import (
    FOUR_WORKERS,
    INPUTS,
    context_for,
    orchestrator_script,
    parallel_plan,
    raw_orchestrator,
    raw_react,
    react_script,
)
from quorum import runner
from quorum.checkpoints import shared_persistence
from quorum.context import QuorumContext
from quorum.testing import Script, scripted
from quorum.threads import compile_pattern

ROUNDS = 4
"""Tool rounds of a ReAct run: 5 agent turns and 4 tool calls."""


async def no_checkpointer(rounds: int, latency: float) -> list[Row]:
    """ReAct and the orchestrator, neither side with a checkpointer."""
    react = react_script(ROUNDS, delay=latency)
    orchestrator = orchestrator_script(FOUR_WORKERS, delay=latency)
    calls = 2 * ROUNDS + 1
    raw_r, raw_o = raw_react(react), raw_orchestrator(orchestrator)
    q_r, q_o = quorum_graph("react"), quorum_graph("orchestrator")
    ctx_r, ctx_o = context_for("react", rounds=ROUNDS), context_for("orchestrator")
    with scripted(react):
        r = await interleaved(
            {
                "quorum": lambda: timed(lambda: run_quorum(q_r, "react", ctx_r, ROUNDS)),
                "raw": lambda: timed(lambda: run_raw(raw_r, "react", ROUNDS)),
            },
            rounds,
        )
    with scripted(orchestrator):
        o = await interleaved(
            {
                "quorum": lambda: timed(lambda: run_quorum(q_o, "orchestrator", ctx_o)),
                "raw": lambda: timed(lambda: run_raw(raw_o, "orchestrator")),
            },
            rounds,
        )
    return [
        Row(
            "agent step, no checkpointer (react)",
            median(r["quorum"]) / calls,
            median(r["raw"]) / calls,
            "s",
            Target("<=", 1.25),
            "raw LangGraph",
            note=f"per step of a {ROUNDS}-round run ({calls} steps)",
        ),
        Row(
            "run, no checkpointer (orchestrator, 4 workers)",
            median(o["quorum"]),
            median(o["raw"]),
            "s",
            Target("<=", 1.25),
            "raw LangGraph",
        ),
    ]


async def durable(rounds: int, latency: float, databases: Databases) -> list[Row]:
    """A durable step (every checkpoint synced) against a raw step with no checkpointer, and
    against the same raw graph made durable with LangGraph's own saver for that database."""
    rows = []
    calls = 2 * ROUNDS + 1
    for label, kind in databases.targets():
        for pattern, script, raw in (
            ("react", react_script(ROUNDS, delay=latency), raw_react),
            ("orchestrator", orchestrator_script(FOUR_WORKERS, delay=latency), raw_orchestrator),
        ):
            per = calls if pattern == "react" else 1
            raw_graph, ctx = raw(script), context_for(pattern, rounds=ROUNDS)
            async with databases.opened(kind) as kept, stock_saver(kind, databases.folder) as s:
                graph = quorum_graph(pattern, kept)
                stock = raw_graph.builder.compile(checkpointer=s)
                with scripted(script):
                    t = await interleaved(
                        {
                            "quorum": lambda: timed(
                                lambda: run_quorum(graph, pattern, ctx, ROUNDS)  # noqa: B023
                            ),
                            "raw": lambda: timed(lambda: run_raw(raw_graph, pattern, ROUNDS)),  # noqa: B023
                            "stock": lambda: timed(lambda: run_raw(stock, pattern, ROUNDS)),  # noqa: B023
                        },
                        rounds,
                    )
            unit = "step" if pattern == "react" else "run"
            rows += [
                Row(
                    f"durable {unit} vs raw, no checkpointer ({pattern})",
                    median(t["quorum"]) / per,
                    median(t["raw"]) / per,
                    "s",
                    Target("<=", 2),
                    "raw LangGraph",
                    database=label,
                ),
                Row(
                    f"durable {unit} vs raw with LangGraph's own saver ({pattern})",
                    median(t["quorum"]) / per,
                    median(t["stock"]) / per,
                    "s",
                    Target("<=", 1.25),
                    "raw LangGraph, stock saver",
                    database=label,
                    note="what Quorum adds to LangGraph's own durable step: journal, metering, "
                    "effect ledger, tool contract",
                ),
            ]
    return rows


async def parallel_workers(
    rounds: int, latency: float, databases: Databases, workers: int = 16
) -> list[Row]:
    """`workers` parallel workers, every model call `latency` long, durable.

    Against the critical path: the model calls that must follow one another (the planner's,
    one worker's, the synthesizer's), counted in a run, each `latency` long. And, side by
    side, the same fan-out in raw LangGraph (`bench.shapes.raw_orchestrator`) on its own
    saver, and with no checkpointer at all: what LangGraph's own supersteps cost.
    """
    rows = []
    script = orchestrator_script(parallel_plan(workers), delay=latency)
    ctx = context_for("orchestrator", plan_steps=workers)
    name = f"{workers} parallel workers at {latency * 1e3:g} ms"
    for label, kind in databases.targets():
        async with (
            databases.opened(kind) as kept,
            stock_saver(kind, databases.folder) as saver,
        ):
            graph = quorum_graph("orchestrator", kept)
            stock = raw_orchestrator(script).builder.compile(checkpointer=saver)
            bare = raw_orchestrator(script)
            with scripted(script):
                t = await interleaved(
                    {
                        "quorum": lambda: timed(lambda: run_quorum(graph, "orchestrator", ctx)),  # noqa: B023
                        "stock": lambda: timed(lambda: run_raw(stock, "orchestrator")),  # noqa: B023
                        "bare": lambda: timed(lambda: run_raw(bare, "orchestrator")),  # noqa: B023
                    },
                    rounds,
                )
                path = await sequential_calls(script, graph, ctx, workers) * latency
        floor = (
            f"raw LangGraph with no checkpointer: {median(t['bare']) / path:.2f} of it "
            f"({median(t['bare']) * 1e3:.0f} ms)"
        )
        rows += [
            Row(
                f"{name}, durable",
                median(t["quorum"]),
                path,
                "s",
                Target("<=", 1.05 if kind == "sqlite" else 1.1),
                "critical path",
                database=label,
                note=f"critical path: {path * 1e3:.0f} ms of model calls one after another; "
                f"raw LangGraph on its own saver: {median(t['stock']) / path:.2f} of it; " + floor,
            ),
            Row(
                f"{name}, durable, vs raw LangGraph on its own saver",
                median(t["quorum"]),
                median(t["stock"]),
                "s",
                Target("<=", 1.05),
                "raw LangGraph, stock saver",
                database=label,
                note=floor,
            ),
        ]
    return rows


async def sequential_calls(script: Script, graph: Any, ctx: QuorumContext, workers: int) -> int:
    """The model calls on a run's critical path, counted in one more run of `graph`: the
    planner's (it thinks, then plans), one worker's and the synthesizer's."""
    script.calls.clear()
    await run_quorum(graph, "orchestrator", ctx)
    by_agent = Counter(call.agent for call in script.calls)
    worker_calls, spread = divmod(by_agent["analyst"], workers)
    if spread:
        raise RuntimeError(f"the {workers} workers made {by_agent['analyst']} calls: not even")
    return by_agent["planner"] + worker_calls + by_agent["synthesizer"]


async def through_api(rounds: int, latency: float, databases: Databases) -> list[Row]:
    """A run through `quorum.run()` against the same compiled graph run on the same database.

    One run at a time, the database held open across them (as runs in flight in one process
    share it): what the Python API adds to a run is its checks, the thread's lease, the
    existence check and the read-back of the finished thread. Opening the database is not
    in it; the note gives the time with the database opened and closed by each call.
    """
    rows = []
    for label, kind in databases.targets():
        for pattern, script in (
            ("react", react_script(ROUNDS, delay=latency)),
            ("orchestrator", orchestrator_script(FOUR_WORKERS, delay=latency)),
        ):
            target, ctx = databases.new(kind), context_for(pattern, rounds=ROUNDS)
            with scripted(script):
                alone = await interleaved(
                    {"run": lambda: timed(lambda: _api_run(pattern, ctx, target))},  # noqa: B023
                    max(3, rounds // 3),
                )
                async with shared_persistence(target) as kept:
                    graph = compile_pattern(kept, pattern)
                    t = await interleaved(
                        {
                            "api": lambda: timed(lambda: _api_run(pattern, ctx, target)),  # noqa: B023
                            "graph": lambda: timed(
                                lambda: run_quorum(graph, pattern, ctx, ROUNDS)  # noqa: B023
                            ),
                        },
                        rounds,
                    )
            rows.append(
                Row(
                    f"quorum.run() vs the compiled graph, one run at a time ({pattern})",
                    median(t["api"]),
                    median(t["graph"]),
                    "s",
                    Target("<=", 1.1),
                    "the compiled graph, durable",
                    database=label,
                    note=f"the database held open; opened and closed by each call: "
                    f"{median(alone['run']) * 1000:.1f} ms a run",
                )
            )
    return rows


async def _api_run(pattern: str, context: QuorumContext, target: str) -> object:
    return await runner.run(pattern, INPUTS[pattern], context=context, database=target)
