"""The benchmark suite: `python -m bench [--quick] [--postgres URL] [--latency MS] [--out DIR]`.

Runs every measurement with the scripted model (`quorum.testing`) answering after `--latency`
milliseconds, prints the table, and writes `suite.json` (name, quorum, baseline, ratio,
target, met per row), `suite.png` (each ratio against its target) and `suite.md` (the table
in Markdown) to `--out`. `--quick` runs every row small and fast (the test suite runs it so
the harness cannot rot); its numbers mean nothing. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import late_steps, recovery, scale, separate, steps, storage
from bench.harness import Row, markdown, print_table, write_chart, write_json
from bench.runs import Databases

BENCH = Path(__file__).resolve().parent


def _machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    cpu = ""
    with open("/proc/cpuinfo") if Path("/proc/cpuinfo").exists() else open(os.devnull) as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if "model name" in line), "")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in load],
        "commit": subprocess.run(
            ["git", "-C", str(BENCH), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip(),
    }


async def suite(args: argparse.Namespace, folder: Path) -> list[Row]:
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


def main(argv: list[str] | None = None) -> int:
    """Run the suite; print the table and write the JSON and the chart."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
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
        choices=["qwen2.5-coder-1.5b", "smollm2-135m", "none"],
        help="embedded model of the tokens/s row (default: the default model; "
        "smollm2-135m with --quick)",
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="JSON and PNG here")
    args = parser.parse_args(argv)
    if args.tokens_model is None:
        args.tokens_model = "smollm2-135m" if args.quick else "qwen2.5-coder-1.5b"
    # Quorum's own settings: its data folder and endpoint never leak into a measurement.
    for name in ("QUORUM_BASE_URL", "OPENAI_BASE_URL", "QUORUM_API_KEY", "OPENAI_API_KEY"):
        os.environ.pop(name, None)
    os.environ["LANGSMITH_TRACING"] = "false"
    # On disk, not tmpfs: a sync that costs nothing would flatter the durable rows.
    (BENCH / ".tmp").mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="suite-", dir=BENCH / ".tmp"))
    os.environ["QUORUM_DATA_DIR"] = str(folder / "data")
    from quorum.settings import get_settings

    get_settings.cache_clear()
    started = time.perf_counter()
    try:
        rows = asyncio.run(suite(args, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    about = {
        **_machine(),
        "quick": args.quick,
        "latency_ms": args.latency,
        "rounds": args.rounds,
        "runs": args.runs,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print_table(rows)
    write_json(rows, args.out / "suite.json", about)
    write_chart(rows, args.out / "suite.png")
    (args.out / "suite.md").write_text(markdown(rows))
    met = [r.met for r in rows if r.met is not None]
    print(f"{sum(met)} of {len(met)} targets met; wrote {args.out / 'suite.json'} and suite.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
