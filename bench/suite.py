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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench import late_steps, recovery, scale, separate, steps, storage
from bench.harness import BENCH, EMBEDDED_MODELS, Measurement, isolated_settings, machine, scratch
from bench.rows import Row, markdown, rows_table, write_chart
from bench.runs import Databases


def stages(args: argparse.Namespace, databases: Databases) -> list[tuple[str, Callable[[], Any]]]:
    """Every measurement, in order, by name; the quick mode runs each one small."""
    quick = args.quick
    latency = args.latency / 1000
    rounds = 2 if quick else args.rounds
    runs = 8 if quick else args.runs
    # A batch of 200 runs takes seconds: fewer rounds of them say as much.
    batches = 1 if quick else max(3, rounds // 5)
    workers = (1, 0.02) if quick else (3, args.worker_latency / 1000)
    listed: list[tuple[str, Callable[[], Any]]] = [
        ("steps without a checkpointer", lambda: steps.no_checkpointer(rounds, latency)),
        ("durable steps", lambda: steps.durable(rounds, latency, databases)),
        ("parallel workers", lambda: steps.parallel_workers(*workers, databases)),
        (
            "quorum.run() against the compiled graph",
            lambda: steps.through_api(rounds, latency, databases),
        ),
        ("concurrent runs", lambda: scale.concurrent(runs, batches, latency, databases)),
        (
            "concurrent runs against LangGraph's own saver",
            lambda: scale.against_stock(runs, batches, latency, databases),
        ),
        ("concurrent quorum.run()", lambda: scale.through_run(runs, batches, latency, databases)),
        ("checkpoint growth", lambda: storage.growth(20 if quick else 100, databases)),
        (
            "late steps against early ones",
            lambda: late_steps.late_steps(1 if quick else 3, databases, 30 if quick else 100),
        ),
        ("resume cost", lambda: recovery.resume_cost(databases)),
        ("memory per run", lambda: scale.memory(runs, databases)),
        ("first-event latency", lambda: scale.first_event(rounds, databases)),
        ("tracing", lambda: _done(separate.tracing(3 if quick else max(rounds, 30)))),
    ]
    if args.tokens_model != "none":
        listed.append(
            (
                f"embedded model tokens/s ({args.tokens_model})",
                lambda: _done(
                    separate.tokens(args.tokens_model, 2 if quick else 10, 8 if quick else 128)
                ),
            )
        )
    return listed


async def _done(rows: list[Row]) -> list[Row]:
    return rows


async def measure(args: argparse.Namespace, folder: Path) -> list[Row]:
    """The measurements `--only` names (every one by default), in the suite's order."""
    rows: list[Row] = []
    for name, measurement in stages(args, Databases(folder, args.postgres)):
        if args.only and not any(part in name for part in args.only):
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {name}", file=sys.stderr, flush=True)
        rows += await measurement()
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
        "--only",
        action="append",
        metavar="STAGE",
        help="run only the stages whose name contains this (repeatable): 'durable steps', "
        "'parallel workers', 'quorum.run()', 'late steps', ...",
    )
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
