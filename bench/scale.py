"""Many runs at once in one process: throughput, memory per run in flight, first-event latency.

Every pattern runs `runs` times concurrently, durable (one shared database) and with no
checkpointer, in interleaved rounds; then the same through `quorum.run()`, the Python API
a user calls, with its lease, preflight and read-back.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable

from bench.rows import Row, Target, interleaved, median
from bench.runs import Databases, quorum_graph, run_quorum, run_raw, stock_saver
from bench.shapes import (
    FOUR_WORKERS,
    INPUTS,
    context_for,
    orchestrator_script,
    raw_orchestrator,
    raw_react,
    react_script,
)
from quorum import runner
from quorum.checkpoints import open_persistence
from quorum.lifecycle import RunEvent
from quorum.testing import Script, scripted

PATTERNS = ("orchestrator", "pipeline", "debate", "react")


async def _batch(runs: int, one: Callable[[], Awaitable[object]]) -> float:
    """Runs per second of `runs` concurrent calls of `one`."""
    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(runs)))
    return runs / (time.perf_counter() - started)


async def _throughput(
    what: str, runs: int, rounds: int, latency: float, databases: Databases, via_api: bool
) -> list[Row]:
    """`runs` concurrent durable runs against as many with no checkpointer, per pattern.

    Durable runs go through the compiled graph on one opened database, or (`via_api`)
    through `quorum.run()` on one database.
    """
    rows = []
    for label, kind in databases.targets():
        for pattern in PATTERNS:
            samples = await _runs_per_second(
                pattern, runs, rounds, latency, databases.new(kind), via_api
            )
            rows.append(
                Row(
                    f"{runs} concurrent {what} vs no checkpointer ({pattern})",
                    median(samples["durable"]),
                    median(samples["none"]),
                    "runs/s",
                    Target(">=", 0.7),
                    "no checkpointer",
                    database=label,
                )
            )
    return rows


async def _runs_per_second(
    pattern: str, runs: int, rounds: int, latency: float, target: str, via_api: bool
) -> dict[str, list[float]]:
    ctx = context_for(pattern, rounds=1)
    bare = quorum_graph(pattern)
    async with open_persistence(target) as kept:
        graph = quorum_graph(pattern, kept)

        def durable() -> Awaitable[object]:
            if via_api:
                return runner.run(pattern, INPUTS[pattern], context=ctx, database=target)
            return run_quorum(graph, pattern, ctx)

        with scripted(Script(delay=latency)):
            return await interleaved(
                {
                    "durable": lambda: _batch(runs, durable),
                    "none": lambda: _batch(runs, lambda: run_quorum(bare, pattern, ctx)),
                },
                rounds,
            )


async def concurrent(runs: int, rounds: int, latency: float, databases: Databases) -> list[Row]:
    """Durable runs of the compiled graphs, sharing one opened database."""
    return await _throughput("durable runs", runs, rounds, latency, databases, via_api=False)


async def through_run(runs: int, rounds: int, latency: float, databases: Databases) -> list[Row]:
    """Durable runs through `quorum.run()`, the Python API, with its lease and read-back."""
    return await _throughput("quorum.run()", runs, rounds, latency, databases, via_api=True)


async def against_stock(runs: int, rounds: int, latency: float, databases: Databases) -> list[Row]:
    """Concurrent durable runs of Quorum against the raw graph made durable with LangGraph's
    own saver: what Quorum's durability costs beyond LangGraph's. The raw side with no
    checkpointer is run too, so the note says how much LangGraph's own durability keeps."""
    rows = []
    for label, kind in databases.targets():
        for pattern, script, raw in (
            ("react", react_script(4, delay=latency), raw_react),
            ("orchestrator", orchestrator_script(FOUR_WORKERS, delay=latency), raw_orchestrator),
        ):
            ctx, raw_graph = context_for(pattern, rounds=4), raw(script)
            async with databases.opened(kind) as kept, stock_saver(kind, databases.folder) as s:
                graph = quorum_graph(pattern, kept)
                stock = raw_graph.builder.compile(checkpointer=s)
                with scripted(script):
                    t = await interleaved(
                        {
                            "quorum": lambda: _batch(runs, lambda: run_quorum(graph, pattern, ctx)),  # noqa: B023
                            "stock": lambda: _batch(runs, lambda: run_raw(stock, pattern)),  # noqa: B023
                            "none": lambda: _batch(runs, lambda: run_raw(raw_graph, pattern)),  # noqa: B023
                        },
                        rounds,
                    )
            kept_by_stock = median(t["stock"]) / median(t["none"])
            rows.append(
                Row(
                    f"{runs} concurrent durable runs vs raw with LangGraph's own saver ({pattern})",
                    median(t["quorum"]),
                    median(t["stock"]),
                    "runs/s",
                    Target(">=", 0.8),
                    "raw LangGraph, stock saver",
                    database=label,
                    note=f"raw LangGraph durable on its own saver runs {kept_by_stock:.2f}x "
                    "as many runs/s as with no checkpointer",
                )
            )
    return rows


async def memory(runs: int, databases: Databases) -> list[Row]:
    """Peak Python memory per run in flight: `runs` concurrent quorum.run() calls."""
    rows = []
    for pattern in ("orchestrator", "react"):
        # A latency keeps every run in flight at once, as they are against a real model.
        script = Script(delay=0.2)
        ctx = context_for(pattern, rounds=1)
        target = databases.new("sqlite")
        peaks = {}
        with scripted(script):
            for side in ("run", "none"):
                bare = quorum_graph(pattern)
                tracemalloc.start()
                if side == "run":
                    await asyncio.gather(
                        *(
                            runner.run(pattern, INPUTS[pattern], context=ctx, database=target)
                            for _ in range(runs)
                        )
                    )
                else:
                    await asyncio.gather(*(run_quorum(bare, pattern, ctx) for _ in range(runs)))
                peaks[side] = tracemalloc.get_traced_memory()[1] / runs
                tracemalloc.stop()
        rows.append(
            Row(
                f"peak memory per run in flight, {runs} at once ({pattern})",
                peaks["run"],
                peaks["none"],
                "B",
                baseline_name="no checkpointer",
                database="sqlite",
                note="tracemalloc peak over the batch, divided by the runs",
            )
        )
    return rows


async def first_event(rounds: int, databases: Databases) -> list[Row]:
    """Time from calling `quorum.run()` to its first progress event."""
    target = databases.new("sqlite")
    script = Script()
    samples: list[float] = []
    first: list[float] = []

    def on_event(event: RunEvent) -> None:
        if not first:
            first.append(time.perf_counter())

    async def once() -> float:
        first.clear()
        started = time.perf_counter()
        await runner.run(
            "react", INPUTS["react"], database=target, on_event=on_event, thread_id=uuid.uuid4().hex
        )
        return first[0] - started

    with scripted(script):
        samples = (await interleaved({"run": once}, rounds))["run"]
    return [
        Row(
            "first-event latency, quorum.run() (react)",
            median(samples),
            None,
            "s",
            database="sqlite",
            note="open the database, take the lease, first task starts",
        )
    ]
