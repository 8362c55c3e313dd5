"""Does a step cost more late in a long thread than early in it?

A ReAct thread of `rounds` tool rounds (the calculator each round, then the answer: 2 x
`rounds` + 1 supersteps, `rounds` + 1 model requests), durable. A step's time is the time from
one model request to the next: the agent's turn, its tool call and the checkpoints between
them. The row compares the median over requests `rounds`-10 to `rounds` with the median over
requests 10 to 20, four ways:

- `quorum.run()` with the scripted model (`quorum.testing`), on a fresh SQLite file;
- the real CLI (`python -m quorum.cli run react ... --set max_steps=...`, streaming as it
  does by default) in its own process, against the scripted OpenAI-compatible server on
  loopback (`quorum/testing/stub.py`) through ChatOpenAI, timed at the server as each request
  arrives;
- raw LangGraph (`bench.shapes.raw_react`) on its own SQLite saver with the scripted model;
- the same raw graph driving ChatOpenAI against the same server (what the HTTP stack alone
  adds as the conversation grows: every request carries the whole conversation).

Each is timed twice: by the clock (what the issue's figures are), and by the CPU time the
running process spent between the requests (`time.process_time()` in this process; the
CLI's threads' on-CPU time from /proc/PID/task/*/schedstat, read as each request arrives):
the work a step costs, which a busy shared machine does not blur as it does the clock.

Run alone: `python -m bench late_steps [--rounds 100] [--repeats 3] [--no-cli] [--json]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.harness import Measurement, isolated_settings, scratch
from bench.rows import Row, Target, interleaved, median
from bench.runs import Databases, run_raw, stock_saver
from bench.shapes import INPUTS, context_for, raw_react, react_script
from quorum.testing import Script

ROUNDS = 100
EARLY = (10, 20)
"""The early window: steps from model request 10 to request 20."""

Mark = tuple[float, float | None]
"""When a model request was made (or arrived): the clock, and the CPU time spent so far by
the process making it (None where it cannot be read), in seconds."""
Starts = list[Mark]
"""Each model request of a run, in order."""


def windows(starts: list[float], rounds: int) -> tuple[float, float]:
    """The median step time (request to next request) early and late in one run."""
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    if len(gaps) < rounds:
        raise RuntimeError(f"{len(starts)} model requests, expected {rounds + 1}")
    early = gaps[EARLY[0] : EARLY[1]]
    late = gaps[rounds - (EARLY[1] - EARLY[0]) : rounds]
    return statistics.median(early), statistics.median(late)


def cpu_of(pid: int | None) -> float | None:
    """On-CPU seconds of process `pid`'s threads so far; None where it cannot be read."""
    if pid is None:
        return None
    try:
        tasks = Path(f"/proc/{pid}/task")
        return sum(int((t / "schedstat").read_text().split()[0]) for t in tasks.iterdir()) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def clocked(script: Script) -> Starts:
    """Mark each of the agent's model calls in `script` (its responder is called as it starts)."""
    marks: Starts = []
    inner = script.responders["agent"]

    def agent(name: str, messages: list[Any]) -> Any:
        marks.append((time.monotonic(), time.process_time()))
        return inner(name, messages)

    script.on("agent", agent)
    return marks


def responder(rounds: int, marks: Starts, pid: list[int]) -> Callable[[dict[str, Any]], Any]:
    """The stub's ReAct model: the calculator until `rounds` results are in, then an answer.

    Each request is marked as it arrives, with the CPU time of process `pid[0]` (the CLI) or,
    without one, of this process.
    """
    from quorum.testing.stub import Reply

    def reply(body: dict[str, Any]) -> Any:
        marks.append((time.monotonic(), cpu_of(pid[0]) if pid else time.process_time()))
        done = sum(1 for m in body.get("messages", []) if m.get("role") == "tool")
        if body.get("tools") and done < rounds:
            return Reply(tool_calls=[{"name": "calculator", "args": {"expression": "6 * 7"}}])
        return "The answer is 42."

    return reply


async def through_run(rounds: int, databases: Databases) -> Starts:
    """One `quorum.run()` of the thread with the scripted model."""
    import quorum
    from quorum.testing import scripted

    script = react_script(rounds)
    marks = clocked(script)
    with scripted(script):
        await quorum.run(
            "react",
            INPUTS["react"],
            context=context_for("react", rounds=rounds),
            database=databases.new("sqlite"),
        )
    return marks


async def raw_scripted(rounds: int, databases: Databases) -> Starts:
    """Raw LangGraph with the scripted model, on LangGraph's own SQLite saver."""
    script = react_script(rounds)
    marks = clocked(script)
    async with stock_saver("sqlite", databases.folder) as saver:
        graph = raw_react(script).builder.compile(checkpointer=saver)
        await run_raw(graph, "react", rounds)
    return marks


async def raw_openai(rounds: int, databases: Databases, stub: Any) -> Starts:
    """Raw LangGraph driving ChatOpenAI against the stub, on LangGraph's own SQLite saver."""
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    marks: Starts = []
    stub.reset()
    stub.responder = responder(rounds, marks, [])
    chat = ChatOpenAI(
        model="stub-model", base_url=stub.base_url, api_key=SecretStr("bench"), max_retries=0
    )
    async with stock_saver("sqlite", databases.folder) as saver:
        graph = raw_react(react_script(rounds), chat).builder.compile(checkpointer=saver)
        await run_raw(graph, "react", rounds)
    return marks


def through_cli(rounds: int, folder: Path, stub: Any) -> Starts:
    """One `quorum run react` in its own process against the stub; arrivals at the stub."""
    import quorum

    marks: Starts = []
    pid: list[int] = []
    stub.reset()
    stub.responder = responder(rounds, marks, pid)
    data = folder / f"cli-{uuid.uuid4().hex[:8]}"
    data.mkdir()
    # The child runs the same Quorum as this process (a checkout shadows an installed one).
    root = str(Path(quorum.__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
        "QUORUM_BASE_URL": stub.base_url,
        "QUORUM_API_KEY": "bench",
        "QUORUM_MODEL": "stub-model",
        "QUORUM_DATA_DIR": str(data),
        "LANGSMITH_TRACING": "false",
    }
    command = [sys.executable, "-m", "quorum.cli", "run", "react", INPUTS["react"]]
    command += ["--set", f"max_steps={rounds + 1}"]
    with subprocess.Popen(
        command, env=env, cwd=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        pid.append(child.pid)
        _, err = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"quorum run failed ({child.returncode}):\n{err[-2000:]}")
    return marks


async def late_steps(
    repeats: int, databases: Databases, rounds: int = ROUNDS, *, cli: bool = True
) -> list[Row]:
    """The rows: late against early steps, each way, medians over `repeats` runs."""
    from quorum.testing.stub import OpenAIStub

    seen: dict[tuple[str, str], list[tuple[float, float]]] = {}

    def side(name: str, run: Callable[[], Awaitable[Starts]]) -> Callable[[], Awaitable[float]]:
        async def measured() -> float:
            marks = await run()
            early, late = windows([wall for wall, _ in marks], rounds)
            seen.setdefault((name, "clock"), []).append((early, late))
            cpu = [c for _, c in marks if c is not None]
            if len(cpu) == len(marks):
                seen.setdefault((name, "CPU"), []).append(windows(cpu, rounds))
            return late / early

        return measured

    async def cli_run() -> Starts:
        return await asyncio.to_thread(through_cli, rounds, databases.folder, stub)

    with OpenAIStub() as stub:
        sides = {
            "quorum.run": side("quorum.run", lambda: through_run(rounds, databases)),
            "raw": side("raw", lambda: raw_scripted(rounds, databases)),
            "raw+openai": side("raw+openai", lambda: raw_openai(rounds, databases, stub)),
        }
        if cli:
            sides["cli"] = side("cli", cli_run)
        await interleaved(sides, repeats)
    # `interleaved` drops its warm-up round from what it returns; drop it here too.
    kept = {key: runs[1:] for key, runs in seen.items()}

    def row(name: str, what: str, target: Target | None, note: str) -> list[Row]:
        return [
            Row(
                f"step {rounds - 10}-{rounds} vs 10-20, {rounds}-round ReAct ({what}, {clock})",
                median([late for _, late in runs]),
                median([early for early, _ in runs]),
                "s",
                target,
                "steps 10-20",
                database="sqlite",
                note=f"median {clock} time from one model request to the next; {note}",
            )
            for clock in ("clock", "CPU")
            if (runs := kept.get((name, clock)))
        ]

    rows = row("quorum.run", "quorum.run()", Target("<=", 1.15), "scripted model")
    if cli:
        rows += row("cli", "CLI", Target("<=", 1.15), "ChatOpenAI against the loopback stub")
    rows += row("raw", "raw LangGraph, own saver", None, "scripted model")
    rows += row("raw+openai", "raw LangGraph + ChatOpenAI, own saver", None, "loopback stub")
    return rows


def arguments(parser: argparse.ArgumentParser) -> None:
    """The thread's length, the runs each way, and whether the CLI is one of the ways."""
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="tool rounds of the thread")
    parser.add_argument("--repeats", type=int, default=3, help="runs each way (plus a warm-up)")
    parser.add_argument("--no-cli", action="store_true", help="leave out the CLI row")


def run(args: argparse.Namespace) -> list[Row]:
    """The rows, measured in a fresh data folder."""
    with scratch("late-") as folder:
        isolated_settings(folder / "data")
        databases = Databases(folder)
        return asyncio.run(late_steps(args.repeats, databases, args.rounds, cli=not args.no_cli))


MEASUREMENT = Measurement(
    "late_steps",
    "a step late in a 100-round ReAct thread against one early in it, four ways",
    arguments,
    run,
)
