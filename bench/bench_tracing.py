"""What tracing costs a run when nothing asks for traces (and what it costs when on).

Runs the same scripted run (`quorum.testing`, so no model server and no network: the graphs,
checkpoints, journal, metering and tools all run for real) several ways, side by side in one
process, interleaved and rotated each round:

- `off`: Quorum as shipped, with no OTEL_* variable and LangSmith tracing off: every hook
  (run, agent step, model call, tool call, LangSmith callbacks) asks `telemetry.tracer()`,
  finds nothing configured and returns a shared do-nothing context;
- `bare`: the tracing code path cut out: the same hooks replaced by functions that return
  that context at once without asking anything (the floor an untraced build could reach);
- `memory` (with `--on`): traces made for real by the SDK into an in-memory exporter.

Reported: the median milliseconds per run of each way, the off/bare ratio (of the medians,
and the median of the per-round ratios), the hooks one run calls, and the cost of one hook
call when off, timed on its own over a million calls.

Run from the repository root: `.venv/bin/python -m bench bench_tracing [--pattern P]
[--rounds N] [--on] [--json] [--out DIR]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import quorum
from bench.harness import Measurement
from quorum import telemetry, testing
from quorum.settings import get_settings

INPUTS = {
    "orchestrator": "Compare SQLite and PostgreSQL for a small team",
    "pipeline": "At what temperature does water boil?",
    "debate": "Is Rust or Go better for a CLI?",
    "react": "What is 6 times 7?",
}
HOOKS = ("run_span", "agent_span", "model_span", "tool_span", "langsmith_callbacks")


@contextmanager
def bare(calls: Counter[str] | None = None) -> Iterator[None]:
    """Replace every tracing hook by one that does nothing (and counts, if asked)."""
    saved = {name: getattr(telemetry, name) for name in HOOKS}

    def stand_in(name: str) -> Any:
        empty: Any = [] if name == "langsmith_callbacks" else telemetry._OFF
        if calls is None:
            return lambda *args, **kwargs: empty

        def counted(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return empty

        return counted

    for name in HOOKS:
        setattr(telemetry, name, stand_in(name))
    try:
        yield
    finally:
        for name, hook in saved.items():
            setattr(telemetry, name, hook)


@contextmanager
def in_memory() -> Iterator[None]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with telemetry.use_provider(provider):
        yield
    provider.shutdown()


async def one_run(pattern: str, database: str) -> float:
    started = time.perf_counter()
    thread = await quorum.run(pattern, INPUTS[pattern], database=database)
    elapsed = time.perf_counter() - started
    assert thread.status == "completed", thread.error
    return elapsed


def hook_cost(repeats: int = 1_000_000) -> float:
    """Nanoseconds one hook call costs when nothing is configured (enter and exit included)."""
    started = time.perf_counter()
    for _ in range(repeats):
        with telemetry.model_span("agent", "model"):
            pass
    return (time.perf_counter() - started) / repeats * 1e9


async def measure(pattern: str, rounds: int, on: bool) -> dict[str, Any]:
    ways = {"off": lambda: _nothing(), "bare": lambda: bare()}
    if on:
        ways["memory"] = in_memory
    folder = Path(tempfile.mkdtemp(prefix="quorum-bench-tracing-"))
    os.environ["QUORUM_DATA_DIR"] = str(folder)
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        del os.environ[name]
    os.environ["LANGSMITH_TRACING"] = "false"
    get_settings.cache_clear()
    assert telemetry.tracer() is None, "nothing may be configured for the `off` way"
    times: dict[str, list[float]] = {way: [] for way in ways}
    calls: Counter[str] = Counter()
    try:
        with testing.scripted(testing.Script()):
            with bare(calls):  # warm-up, counting the hooks one run calls
                await one_run(pattern, str(folder / "warm.db"))
            for way in ways:
                with ways[way]():
                    await one_run(pattern, str(folder / f"warm-{way}.db"))
            names = list(ways)
            for index in range(rounds):
                shift = index % len(names)
                for way in names[shift:] + names[:shift]:
                    with ways[way]():
                        database = str(folder / f"{way}-{index}.db")
                        times[way].append(await one_run(pattern, database))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    medians = {way: statistics.median(values) * 1000 for way, values in times.items()}
    per_round = [off / bare_ for off, bare_ in zip(times["off"], times["bare"], strict=True)]
    hook_ns = hook_cost()
    hooks = sum(calls.values())
    return {
        "pattern": pattern,
        "rounds": rounds,
        "median_ms": {way: round(value, 2) for way, value in medians.items()},
        "off_over_bare_of_medians": round(medians["off"] / medians["bare"], 4),
        "off_over_bare_median_of_rounds": round(statistics.median(per_round), 4),
        "hooks_per_run": dict(calls),
        "hook_ns_when_off": round(hook_ns, 1),
        "hooks_cost_share_of_run": round(hooks * hook_ns / 1e6 / medians["off"], 7),
    }


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def arguments(parser: argparse.ArgumentParser) -> None:
    """The pattern, the rounds, and whether tracing on is timed too."""
    parser.add_argument("--pattern", choices=list(INPUTS), default="orchestrator")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--on", action="store_true", help="also time tracing into memory")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """The ways, timed side by side."""
    return await measure(args.pattern, args.rounds, args.on)


def table(result: dict[str, Any], _args: argparse.Namespace) -> Iterator[str]:
    """Each way's median, the off/bare ratios and what the hooks cost."""
    yield f"{result['pattern']}: {result['rounds']} interleaved rounds"
    for way, value in result["median_ms"].items():
        yield f"  {way:7s} median {value:8.2f} ms per run"
    yield (
        f"  off/bare: {result['off_over_bare_of_medians']:.4f} (medians), "
        f"{result['off_over_bare_median_of_rounds']:.4f} (median of per-round ratios)"
    )
    yield (
        f"  hooks per run {result['hooks_per_run']}; one hook when off "
        f"{result['hook_ns_when_off']:.0f} ns; all of them: "
        f"{result['hooks_cost_share_of_run'] * 100:.4f} % of a run"
    )


MEASUREMENT = Measurement(
    "bench_tracing",
    "what tracing costs a scripted run: off against the hooks cut out, and on",
    arguments,
    run,
    table=table,
)
