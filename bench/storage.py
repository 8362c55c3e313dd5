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
from quorum.context import QuorumContext
from quorum.graphs import PATTERNS
from quorum.testing import Script, scripted

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
        writes = await _run_on_quorum_saver(ours, cfg, ctx)
        stock = databases.new("sqlite")
        stock_cfg = config(rounds)
        await _run_on_stock_saver(stock, stock_cfg, ctx)
        raw = databases.new("sqlite")  # the same work as plain LangGraph, on its own saver
        await _run_raw_langgraph(raw, script, rounds)
    thread, stock_thread = cfg["configurable"]["thread_id"], stock_cfg["configurable"]["thread_id"]
    return [
        _write_time(writes),
        _bytes_stored(rounds, stored_bytes(ours, thread), stored_bytes(stock, stock_thread)),
        _metadata(ours, raw),
    ]


async def _run_on_quorum_saver(
    path: str, cfg: dict[str, Any], ctx: QuorumContext
) -> list[tuple[int, float]]:
    """The ReAct thread on Quorum's saver in `path`; the time of each checkpoint write."""
    async with open_persistence(path) as kept:
        writes = _timing(kept.saver)
        graph = PATTERNS["react"].compile(checkpointer=kept.saver, store=kept.store)
        await graph.ainvoke({"input": INPUTS["react"]}, cfg, context=ctx, durability="sync")
    return writes


async def _run_on_stock_saver(path: str, cfg: dict[str, Any], ctx: QuorumContext) -> None:
    """The same Quorum graph on LangGraph's stock SQLite saver in `path`."""
    async with aiosqlite.connect(path) as conn:
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
        graph = PATTERNS["react"].compile(checkpointer=saver, store=InMemoryStore())
        await graph.ainvoke({"input": INPUTS["react"]}, cfg, context=ctx, durability="sync")


async def _run_raw_langgraph(path: str, script: Script, rounds: int) -> None:
    """The same work as raw LangGraph (`raw_react`) on the stock SQLite saver in `path`."""
    async with aiosqlite.connect(path) as conn:
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
        await run_raw(raw_react(script).builder.compile(checkpointer=saver), "react", rounds)


def _write_time(writes: list[tuple[int, float]]) -> Row:
    """The median write late in the thread (its last 10 steps) against early (steps 5-15)."""
    early = [s for step, s in writes if 5 <= step <= 15]
    late_step = max(step for step, _ in writes)
    late = [s for step, s in writes if step >= late_step - 10]
    return Row(
        f"checkpoint write time, step {late_step} vs step 10 (react)",
        median(late),
        median(early),
        "s",
        Target("<=", 1.3),
        "step 10",
        database="sqlite",
        note=f"{PAD:,}-char turns; medians of the writes at steps 5-15 and the last 10",
    )


def _bytes_stored(rounds: int, ours: int, stock: int) -> Row:
    """Bytes the thread keeps on Quorum's saver against the stock saver's."""
    return Row(
        f"bytes stored, {rounds}-round ReAct thread",
        ours,
        stock,
        "B",
        Target("<=", 1e6, of="quorum"),
        "stock saver",
        database="sqlite",
        note=f"{PAD:,}-char turns; checkpoints, metadata and writes",
    )


def _metadata(ours: str, raw: str) -> Row:
    """Metadata per checkpoint on Quorum's saver against raw LangGraph's."""
    return Row(
        "checkpoint metadata per checkpoint (react)",
        metadata_bytes(ours),
        metadata_bytes(raw),
        "B",
        Target("<=", 2.0),
        "raw LangGraph",
        database="sqlite",
        note="the run's settings stored once per run; per checkpoint its id and pattern",
    )
