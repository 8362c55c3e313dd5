"""The benchmark suite, what `python -m bench` runs: every ratio row, on the scripted model.

Runs every measurement with the scripted model (`quorum.testing`) answering after `--latency`
milliseconds, prints the table, and writes `suite.json` (name, quorum, baseline, ratio,
target, met per row), `suite.png` (each ratio against its target) and `suite.md` (the table
in Markdown) to `--out`. `--quick` runs every row small and fast (the test suite runs it so
the harness cannot rot); its numbers mean nothing. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import late_steps, recovery, scale, separate, steps, storage
from bench.harness import BENCH, EMBEDDED_MODELS, Measurement, isolated_settings, machine, scratch
from bench.rows import Row, markdown, rows_table, write_chart
from bench.runs import Databases


async def measure(args: argparse.Namespace, folder: Path) -> list[Row]:
    """Every measurement, in order; the quick mode runs each one small."""
    quick = args.quick
    latency = args.latency / 1000
    rounds = 2 if quick else args.rounds
    runs = 8 if quick else args.runs
    # A batch of 200 runs takes seconds: fewer rounds of them say as much.
    batches = 1 if quick else max(3, rounds // 5)
    databases = Databases(folder, args.postgres)
    rows: list[Row] = []

    def stage(name: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {name}", file=sys.stderr, flush=True)

    stage("steps without a checkpointer")
    rows += await steps.no_checkpointer(rounds, latency)
    stage("durable steps")
    rows += await steps.durable(rounds, latency, databases)
    stage("parallel workers")
    rows += await steps.parallel_workers(
        1 if quick else 3, 0.02 if quick else args.worker_latency / 1000, databases
    )
    stage("quorum.run() against the compiled graph")
    rows += await steps.through_api(rounds, latency, databases)
    stage("concurrent runs")
    rows += await scale.concurrent(runs, batches, latency, databases)
    stage("concurrent runs against LangGraph's own saver")
    rows += await scale.against_stock(runs, batches, latency, databases)
    stage("concurrent quorum.run()")
    rows += await scale.through_run(runs, batches, latency, databases)
    stage("checkpoint growth")
    rows += await storage.growth(20 if quick else 100, databases)
    stage("late steps against early ones")
    rows += await late_steps.late_steps(1 if quick else 3, databases, 30 if quick else 100)
    stage("resume cost")
    rows += await recovery.resume_cost(databases)
    stage("memory per run")
    rows += await scale.memory(runs, databases)
    stage("first-event latency")
    rows += await scale.first_event(rounds, databases)
    stage("tracing")
    rows += separate.tracing(3 if quick else max(rounds, 30))
    if args.tokens_model != "none":
        stage(f"embedded model tokens/s ({args.tokens_model})")
        rows += separate.tokens(args.tokens_model, 2 if quick else 10, 8 if quick else 128)
    return rows


def arguments(parser: argparse.ArgumentParser) -> None:
    """The suite's options; its report goes to bench/results unless `--out` says otherwise."""
    parser.add_argument("--quick", action="store_true", help="every row small and fast")
    parser.add_argument("--latency", type=float, default=0.0, help="model latency, ms")
    parser.add_argument(
        "--worker-latency", type=float, default=200.0, help="parallel-worker row latency, ms"
    )
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds per row")
    parser.add_argument("--runs", type=int, default=200, help="concurrent runs")
    parser.add_argument("--postgres", metavar="URL", help="also measure on this PostgreSQL db")
    parser.add_argument(
        "--tokens-model",
        choices=[*EMBEDDED_MODELS, "none"],
        help="embedded model of the tokens/s row (default: the default model; "
        "smollm2-135m with --quick)",
    )
    parser.set_defaults(out=BENCH / "results")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the suite in a fresh data folder; the rows, with what the run was."""
    if args.tokens_model is None:
        args.tokens_model = "smollm2-135m" if args.quick else EMBEDDED_MODELS[0]
    started = time.perf_counter()
    with scratch("suite-") as folder:
        isolated_settings(folder / "data")
        rows = asyncio.run(measure(args, folder))
    return {
        **machine(),
        "quick": args.quick,
        "latency_ms": args.latency,
        "rounds": args.rounds,
        "runs": args.runs,
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }


def table(result: dict[str, Any], _args: argparse.Namespace) -> Iterator[Any]:
    """The rows' table, and how many targets they met."""
    yield rows_table(result["rows"])
    met = [r.met for r in result["rows"] if r.met is not None]
    yield f"{sum(met)} of {len(met)} targets met"


def files(result: dict[str, Any], folder: Path) -> list[Path]:
    """The chart (each ratio against its target) and the table in Markdown."""
    chart, table_md = folder / "suite.png", folder / "suite.md"
    write_chart(result["rows"], chart)
    table_md.write_text(markdown(result["rows"]))
    return [chart, table_md]


MEASUREMENT = Measurement(
    "suite",
    "every ratio row on the scripted model, to suite.json, .png and .md (the default)",
    arguments,
    run,
    table=table,
    files=files,
)
