"""How the suite runs a pattern: Quorum's graph with or without durable state, or a raw graph."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bench.shapes import INPUTS, recursion_limit
from quorum.checkpoints import Persistence, is_postgres, open_persistence
from quorum.context import QuorumContext
from quorum.graphs import PATTERNS


def quorum_graph(pattern: str, kept: Persistence | None = None) -> Any:
    """Quorum's `pattern`, durable in `kept` or with no checkpointer at all."""
    if kept is None:
        return PATTERNS[pattern].compile(name=pattern)
    return PATTERNS[pattern].compile(checkpointer=kept.saver, store=kept.store, name=pattern)


def config(rounds: int = 4) -> dict[str, Any]:
    """A new thread's config, with room for `rounds` tool rounds."""
    return {
        "configurable": {"thread_id": uuid.uuid4().hex[:12]},
        "recursion_limit": recursion_limit(rounds),
    }


async def run_quorum(
    graph: Any, pattern: str, context: QuorumContext, rounds: int = 4
) -> dict[str, Any]:
    """One run of Quorum's graph to its end, each step's checkpoint synced as `quorum.run` does."""
    # `durability` without a checkpointer fails in LangGraph (it has nothing to wait for).
    durability = {"durability": "sync"} if graph.checkpointer else {}
    return await graph.ainvoke(
        {"input": INPUTS[pattern]}, config(rounds), context=context, **durability
    )


async def run_raw(graph: Any, pattern: str, rounds: int = 4) -> dict[str, Any]:
    """One run of a raw LangGraph graph (with a checkpointer, each step's checkpoint synced)."""
    start: dict[str, Any] = (
        {"messages": [("user", INPUTS[pattern])]}
        if pattern == "react"
        else {"input": INPUTS[pattern]}
    )
    durability = {"durability": "sync"} if graph.checkpointer else {}
    return await graph.ainvoke(start, config(rounds), **durability)


@asynccontextmanager
async def stock_saver(kind: str, folder: Path) -> AsyncIterator[Any]:
    """LangGraph's own async saver for that database kind, as a raw LangGraph user sets it up.

    SQLite gets Quorum's pragmas (WAL, synchronous=NORMAL), so the two sides differ only in
    what Quorum adds, not in how hard the disk is asked to sync.
    """
    if is_postgres(kind):
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        async with AsyncPostgresSaver.from_conn_string(kind) as saver:
            await saver.setup()
            yield saver
        return
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with aiosqlite.connect(folder / f"stock-{uuid.uuid4().hex[:8]}.db") as conn:
        await conn.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
        yield saver


class Databases:
    """Fresh databases for the suite: SQLite files in one folder, or one PostgreSQL database."""

    def __init__(self, folder: Path, postgres: str | None = None) -> None:
        self.folder = folder
        self.postgres = postgres
        self._count = 0

    def targets(self) -> list[tuple[str, str]]:
        """(label, target) of each database kind to measure."""
        kinds = [("sqlite", "sqlite")]
        if self.postgres:
            kinds.append(("postgres", self.postgres))
        return kinds

    def new(self, kind: str) -> str:
        """A target of that kind with no threads of this suite's run in it yet."""
        if is_postgres(kind):
            return kind  # every run has a thread id of its own
        self._count += 1
        return str(self.folder / f"bench-{self._count}.db")

    @asynccontextmanager
    async def opened(self, kind: str) -> AsyncIterator[Persistence]:
        """A fresh database of that kind, opened."""
        async with open_persistence(self.new(kind)) as kept:
            yield kept
