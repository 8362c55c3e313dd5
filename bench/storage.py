"""What durable state costs as a thread grows: checkpoint write time and bytes stored.

A ReAct thread of `rounds` tool rounds, each turn carrying 1,000 characters of reasoning, runs
durable on Quorum's saver; every `aput` is timed. Write time at step `rounds` is compared with
step 10; the bytes in the checkpoint tables with LangGraph's stock saver running the same graph;
the metadata each checkpoint carries with raw LangGraph's for the same work (`raw_react`).
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import aiosqlite
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.store.memory import InMemoryStore

from bench.rows import Row, Target, median
from bench.runs import Databases, config, run_raw
from bench.shapes import INPUTS, context_for, raw_react, react_script
from quorum.checkpoints import open_persistence
from quorum.graphs import PATTERNS
from quorum.testing import scripted

PAD = 1_000


def _timing(saver: Any) -> list[tuple[int, float]]:
    """Time every `aput` of `saver`: (step, seconds) per checkpoint written."""
    writes: list[tuple[int, float]] = []
    inner = saver.aput

    async def aput(cfg: Any, checkpoint: Any, metadata: Any, versions: Any) -> Any:
        started = time.perf_counter()
        try:
            return await inner(cfg, checkpoint, metadata, versions)
        finally:
            writes.append((int(metadata.get("step", -1)), time.perf_counter() - started))

    saver.aput = aput
    return writes


def metadata_bytes(path: str) -> float:
    """Mean bytes of metadata per checkpoint in a SQLite file (each here holds one thread)."""
    with sqlite3.connect(path) as conn:
        [(mean,)] = conn.execute("SELECT AVG(LENGTH(metadata)) FROM checkpoints").fetchall()
    return float(mean)


def stored_bytes(path: str, thread_id: str) -> int:
    """Bytes of checkpoints, metadata and pending writes kept for `thread_id` in a SQLite file."""
    with sqlite3.connect(path) as conn:
        kept = conn.execute(
            "SELECT COALESCE(SUM(LENGTH(checkpoint) + LENGTH(metadata)), 0) FROM checkpoints "
            "WHERE thread_id = ?",
            (thread_id,),
        ).fetchone()[0]
        writes = conn.execute(
            "SELECT COALESCE(SUM(LENGTH(value)), 0) FROM writes WHERE thread_id = ?", (thread_id,)
        ).fetchone()[0]
    return int(kept + writes)


async def growth(rounds: int, databases: Databases) -> list[Row]:
    """Write time late in a long thread against early, and bytes stored against stock."""
    script = react_script(rounds, pad=PAD)
    ctx = context_for("react", rounds=rounds)
    ours = databases.new("sqlite")
    cfg = config(rounds)
    with scripted(script):
        async with open_persistence(ours) as kept:
            writes = _timing(kept.saver)
            graph = PATTERNS["react"].compile(checkpointer=kept.saver, store=kept.store)
            await graph.ainvoke({"input": INPUTS["react"]}, cfg, context=ctx, durability="sync")
        stock = databases.new("sqlite")
        stock_cfg = config(rounds)
        async with aiosqlite.connect(stock) as conn:
            saver = AsyncSqliteSaver(conn)
            await saver.setup()
            graph = PATTERNS["react"].compile(checkpointer=saver, store=InMemoryStore())
            await graph.ainvoke(
                {"input": INPUTS["react"]}, stock_cfg, context=ctx, durability="sync"
            )
        raw = databases.new("sqlite")  # the same work as plain LangGraph, on its own saver
        async with aiosqlite.connect(raw) as conn:
            saver = AsyncSqliteSaver(conn)
            await saver.setup()
            await run_raw(raw_react(script).builder.compile(checkpointer=saver), "react", rounds)
    early = [s for step, s in writes if 5 <= step <= 15]
    late_step = max(step for step, _ in writes)
    late = [s for step, s in writes if step >= late_step - 10]
    thread = cfg["configurable"]["thread_id"]
    return [
        Row(
            f"checkpoint write time, step {late_step} vs step 10 (react)",
            median(late),
            median(early),
            "s",
            Target("<=", 1.3),
            "step 10",
            database="sqlite",
            note=f"{PAD:,}-char turns; medians of the writes at steps 5-15 and the last 10",
        ),
        Row(
            f"bytes stored, {rounds}-round ReAct thread",
            stored_bytes(ours, thread),
            stored_bytes(stock, stock_cfg["configurable"]["thread_id"]),
            "B",
            Target("<=", 1e6, of="quorum"),
            "stock saver",
            database="sqlite",
            note=f"{PAD:,}-char turns; checkpoints, metadata and writes",
        ),
        Row(
            "checkpoint metadata per checkpoint (react)",
            metadata_bytes(ours),
            metadata_bytes(raw),
            "B",
            Target("<=", 2.0),
            "raw LangGraph",
            database="sqlite",
            note="the run's settings stored once per run; per checkpoint its id and pattern",
        ),
    ]
