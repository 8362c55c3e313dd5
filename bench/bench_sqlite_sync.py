"""Per-commit cost of the SQLite checkpointer with synchronous=NORMAL against FULL.

Quorum opens its SQLite checkpoints with WAL and `synchronous=NORMAL`; LangGraph's own saver
sets WAL and leaves SQLite's stock `synchronous=FULL`, which syncs the WAL on every commit.
This times sequential `AsyncSqliteSaver.aput` checkpoint writes of a small orchestrator state,
opened through Quorum's `open_sqlite` and then set to each mode, in interleaved rounds
(FULL, NORMAL, NORMAL, FULL, ...) on two database files side by side.

fsync costs nothing on tmpfs, so the files go on the disk under the repository
(`bench/.tmp/`, created and removed here) unless `--dir` says otherwise, and the filesystem
they were on is printed with the results.

Run from the repository root: `.venv/bin/python -m bench bench_sqlite_sync [--rounds N]
[--commits N] [--dir PATH] [--json] [--out DIR]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint, CheckpointMetadata, empty_checkpoint
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from bench.harness import Measurement
from quorum.checkpoints.sqlite import QuorumSqliteSaver, open_sqlite
from quorum.state import Plan, PlanStep, Usage

MODES = {"FULL": 2, "NORMAL": 1}
"""The synchronous modes compared, with the number `PRAGMA synchronous` reads back."""
DEFAULT_DIR = Path(__file__).resolve().parent / ".tmp"
RESULT = (
    "SQLite in WAL mode suits a single-node service: readers never block the writer. "
    "PostgreSQL pays off once several hosts write checkpoints or runs need row-level "
    "retention policies; its network round trip costs more per commit than a local file. "
)


def orchestrator_state(step: int) -> dict[str, Any]:
    """Channel values like an orchestrator run's after its workers report."""
    plan = Plan(
        steps=[
            PlanStep(
                id="s1",
                worker="researcher",
                task="List SQLite's durability modes.",
                dependencies=[],
            ),
            PlanStep(
                id="s2",
                worker="researcher",
                task="List PostgreSQL's commit costs.",
                dependencies=[],
            ),
            PlanStep(
                id="s3",
                worker="writer",
                task="Compare them for a small team.",
                dependencies=["s1", "s2"],
            ),
        ]
    )
    return {
        "input": "Compare SQLite and PostgreSQL as the checkpoint store for a small team",
        "plan": plan,
        "plan_feedback": [],
        "results": {"s1": RESULT * 3, "s2": RESULT * 3, "s3": RESULT * 2},
        "usage": {
            "planner": Usage(calls=1, input_tokens=412, output_tokens=96),
            "worker": Usage(calls=3, input_tokens=1830 + step, output_tokens=702),
        },
    }


def checkpoint(step: int) -> Checkpoint:
    """A new checkpoint (its own id) holding the state at `step`."""
    values = orchestrator_state(step)
    fresh = empty_checkpoint()
    fresh["channel_values"] = values
    fresh["channel_versions"] = {name: step + 1 for name in values}
    return fresh


def filesystem(path: Path) -> dict[str, str]:
    """The mount that holds `path`: device, type and options, from /proc/mounts."""
    target = os.path.realpath(path)
    best = {"mount": "?", "device": "?", "type": "unknown (no /proc/mounts)", "options": ""}
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return best
    for line in lines:
        device, mount, kind, options = line.split()[:4]
        mount = mount.replace("\\040", " ")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        # The longest mount point that contains the path is the one it lives on.
        if inside and (best["mount"] == "?" or len(mount) >= len(best["mount"])):
            best = {"mount": mount, "device": device, "type": kind, "options": options}
    return best


def stock_synchronous(path: Path) -> int:
    """What `PRAGMA synchronous` is on a plain connection, as LangGraph's saver leaves it."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        value = int(conn.execute("PRAGMA synchronous").fetchone()[0])
    conn.close()
    return value


async def open_mode(stack: AsyncExitStack, path: Path, mode: str) -> QuorumSqliteSaver:
    """Quorum's SQLite saver on `path`, switched to `mode` (a no-op for NORMAL)."""
    saver = await stack.enter_async_context(open_sqlite(path))
    # Checkpoints are written on the saver's writer thread, with its own connection.
    assert saver.writer is not None
    conn = saver.writer.conn

    def switch() -> Any:
        conn.execute(f"PRAGMA synchronous={mode}")
        return conn.execute("PRAGMA synchronous").fetchone()

    row = await saver.writer.run(switch)
    if row is None or row[0] != MODES[mode]:
        raise RuntimeError(f"could not set synchronous={mode}: reads back {row}")
    return saver


class Writer:
    """One database in one mode: a thread whose checkpoints are written in sequence."""

    def __init__(self, saver: AsyncSqliteSaver) -> None:
        self.saver = saver
        self.config: RunnableConfig = {"configurable": {"thread_id": "bench", "checkpoint_ns": ""}}
        self.step = 0
        self.seconds: list[float] = []
        self.round_means: list[float] = []

    async def commit(self, commits: int) -> None:
        """Write `commits` checkpoints, one commit each, timing every one."""
        timed = []
        for _ in range(commits):
            self.step += 1
            fresh = checkpoint(self.step)
            metadata: CheckpointMetadata = {"source": "loop", "step": self.step, "parents": {}}
            start = time.perf_counter()
            self.config = await self.saver.aput(
                self.config, fresh, metadata, fresh["channel_versions"]
            )
            timed.append(time.perf_counter() - start)
        self.seconds += timed
        self.round_means.append(statistics.fmean(timed))


def summary(writer: Writer) -> dict[str, float]:
    """Per-commit microseconds: median, mean and 90th percentile."""
    micros = [1e6 * s for s in writer.seconds]
    return {
        "median_us": statistics.median(micros),
        "mean_us": statistics.fmean(micros),
        "p90_us": statistics.quantiles(micros, n=10)[-1],
        "commits": len(micros),
    }


async def measure(folder: Path, rounds: int, commits: int) -> dict[str, Any]:
    """Interleaved rounds of `commits` writes in each mode; the results as plain data."""
    async with AsyncExitStack() as stack:
        writers = {
            mode: Writer(await open_mode(stack, folder / f"{mode.lower()}.db", mode))
            for mode in MODES
        }
        for writer in writers.values():
            await writer.commit(5)  # warm-up: tables, pages and the serializer's first use
            writer.seconds.clear()
            writer.round_means.clear()
        order = list(writers)
        for round_ in range(rounds):
            for mode in order if round_ % 2 == 0 else order[::-1]:
                await writers[mode].commit(commits)
    full, normal = writers["FULL"], writers["NORMAL"]
    modes = {mode: summary(writer) for mode, writer in writers.items()}
    return {
        "rounds": rounds,
        "commits_per_round": commits,
        "state_bytes": len(normal.saver.serde.dumps_typed(checkpoint(0))[1]),
        "stock_synchronous": stock_synchronous(folder / "stock.db"),
        "filesystem": filesystem(folder),
        "modes": modes,
        "full_over_normal": {
            "median": modes["FULL"]["median_us"] / modes["NORMAL"]["median_us"],
            "mean": modes["FULL"]["mean_us"] / modes["NORMAL"]["mean_us"],
            # Per round: a burst of load on the shared machine hits both modes of a round.
            "median_paired_round_means": statistics.median(
                f / n for f, n in zip(full.round_means, normal.round_means, strict=True)
            ),
        },
    }


def table(result: dict[str, Any], _args: argparse.Namespace) -> Iterator[str]:
    """The results as a plain table."""
    fs = result["filesystem"]
    stock = {value: name for name, value in MODES.items()}.get(result["stock_synchronous"], "?")
    yield (
        f"{result['rounds']} interleaved rounds x {result['commits_per_round']} aput commits per "
        f"mode, state {result['state_bytes']} bytes serialized, WAL"
    )
    yield f"database folder on {fs['mount']} ({fs['device']}, {fs['type']}, {fs['options']})"
    yield f"stock synchronous on a fresh connection: {result['stock_synchronous']} ({stock})"
    yield f"{'synchronous':<12} {'median us':>10} {'mean us':>10} {'p90 us':>10} {'commits':>8}"
    for mode, row in result["modes"].items():
        yield (
            f"{mode:<12} {row['median_us']:>10.0f} {row['mean_us']:>10.0f} "
            f"{row['p90_us']:>10.0f} {row['commits']:>8}"
        )
    ratio = result["full_over_normal"]
    yield (
        f"FULL/NORMAL: median {ratio['median']:.2f}x, mean {ratio['mean']:.2f}x, "
        f"median of paired round means {ratio['median_paired_round_means']:.2f}x"
    )
    if fs["type"] in {"tmpfs", "ramfs"}:
        yield "warning: the files were on a RAM filesystem, where fsync costs nothing"


def arguments(parser: argparse.ArgumentParser) -> None:
    """Rounds, commits per round, and the folder the databases go in."""
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    parser.add_argument(
        "--commits", type=int, default=100, help="commits per mode per round (default 100)"
    )
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help="where the databases go (default bench/.tmp)"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure in a fresh folder under `--dir`, removed afterwards (`--dir` too if made here)."""
    created = not args.dir.exists()
    args.dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="sqlite-sync-", dir=args.dir))
    try:
        return asyncio.run(measure(folder, args.rounds, args.commits))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if created:
            args.dir.rmdir()


MEASUREMENT = Measurement(
    "bench_sqlite_sync",
    "per-commit cost of SQLite checkpoints, synchronous=NORMAL against FULL",
    arguments,
    run,
    table=table,
)
