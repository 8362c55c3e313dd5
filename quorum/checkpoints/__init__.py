"""Durable state: where every Quorum run (CLI, Python, Studio) keeps what it has done.

One database, SQLite by default or PostgreSQL when the setting is a postgresql:// URL,
holds a run's checkpoints (LangGraph's saver), its call journal and effect ledger (LangGraph's
store) and its lease (`lease.py`). `open_persistence()` opens all three; `shared_persistence()`
lets every run in flight in a process share one opened set per database; `open_checkpointer`
and `open_store` are what langgraph.json points Studio at, so its runs land in the same place.
Commands that only read (list, show) open it with `create=False`: a SQLite file that does not
exist is `NoDatabase`, not a new empty database left behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import aiosqlite
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.store.base import BaseStore

from quorum import effects, journal, run_settings
from quorum.checkpoints.lease import Leases
from quorum.checkpoints.postgres import open_postgres, open_postgres_store
from quorum.checkpoints.sqlite import open_sqlite, open_sqlite_store
from quorum.errors import NoDatabase, check_utf8
from quorum.settings import get_settings


def is_postgres(target: str) -> bool:
    """Whether `target` names a PostgreSQL database rather than a SQLite file."""
    return target.startswith(("postgres://", "postgresql://"))


@asynccontextmanager
async def open_checkpointer(
    target: str | None = None, *, read_only: bool = False
) -> AsyncIterator[BaseCheckpointSaver]:
    """Open the checkpoint store `target` (default: the settings' database)."""
    async with _open(target, open_sqlite, open_postgres, read_only) as saver:
        yield saver


@asynccontextmanager
async def open_store(
    target: str | None = None, *, read_only: bool = False
) -> AsyncIterator[BaseStore]:
    """Open the store (call journal, effect ledger) in the database `target`."""
    async with _open(target, open_sqlite_store, open_postgres_store, read_only) as store:
        yield store


def _open(target: str | None, sqlite: Any, postgres: Any, read_only: bool) -> Any:
    target = target or get_settings().database_target
    # A reader of PostgreSQL is bounded by its role's grants, not by how it connects.
    return postgres(target) if is_postgres(target) else sqlite(target, read_only=read_only)


@dataclass(frozen=True)
class Persistence:
    """Everything a run keeps in its database."""

    saver: BaseCheckpointSaver
    store: BaseStore
    leases: Leases

    async def delete_thread(self, thread_id: str) -> int:
        """Delete a thread: its checkpoints, its journal, its effect ledger and its lease.

        Returns how many journal and ledger records there were.
        """
        await self.saver.adelete_thread(thread_id)
        records = 0
        for kind in (journal.NAMESPACE, effects.NAMESPACE, run_settings.NAMESPACE):
            records += await journal.delete_thread(self.store, kind, thread_id)
        await self.leases.delete(thread_id)
        return records


@asynccontextmanager
async def open_persistence(
    target: str | None = None,
    *,
    create: bool = True,
    read_only: bool = False,
    thread_id: str | None = None,
) -> AsyncIterator[Persistence]:
    """Open the checkpoints, the store and the leases of the database `target`.

    With `create=False` a SQLite file that does not exist raises `NoDatabase` (nothing is
    created; `thread_id` is the thread the caller looks for, named in the message); a
    PostgreSQL database is opened as it is. `read_only` (which implies `create=False`) opens
    a SQLite file only to read it, so that a file or folder the reader may not write opens.
    """
    target = target or get_settings().database_target
    if thread_id is not None:
        check_utf8(thread_id, "the thread id")
    if not create or read_only:
        _must_exist(target, thread_id)
    async with AsyncExitStack() as stack:
        saver: Any = await stack.enter_async_context(open_checkpointer(target, read_only=read_only))
        store = await stack.enter_async_context(open_store(target, read_only=read_only))
        conn = saver.conn
        is_sqlite = isinstance(conn, aiosqlite.Connection)
        writer = getattr(saver, "writer", None)
        leases = Leases(conn, saver.lock, "sqlite" if is_sqlite else "postgres", writer)
        if read_only:
            if is_sqlite and not await _has_checkpoints(conn):
                _must_exist(target, thread_id, empty=True)
            await leases.check_present()
        else:
            await leases.setup()
        yield Persistence(saver, store, leases)


@dataclass
class _Opened:
    """One database's persistence, open while any run of this event loop uses it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    persistence: Persistence | None = None


_OPENED: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Opened]] = WeakKeyDictionary()


@asynccontextmanager
async def shared_persistence(
    target: str | None = None,
    *,
    create: bool = True,
    read_only: bool = False,
    thread_id: str | None = None,
) -> AsyncIterator[Persistence]:
    """`open_persistence(target)`, shared by every user of this event loop at the same time.

    Concurrent runs in one process then share one SQLite connection (or PostgreSQL
    connection) per database instead of each opening, setting up and closing its own: the
    connections' own locks serialise their statements, and a thread's lease still keeps one
    run per thread. The database is closed when its last user is done.
    """
    target = target or get_settings().database_target
    if thread_id is not None:
        check_utf8(thread_id, "the thread id")
    if not create or read_only:
        _must_exist(target, thread_id)
    # A reader's connections are not a writer's: each kind is shared with its own kind.
    by_target = _OPENED.setdefault(asyncio.get_running_loop(), {})
    opened = by_target.setdefault(f"{'ro:' if read_only else ''}{target}", _Opened())
    async with opened.lock:
        if opened.users == 0:
            opened.stack = AsyncExitStack()
            opened.persistence = await opened.stack.enter_async_context(
                open_persistence(target, read_only=read_only, thread_id=thread_id)
            )
        opened.users += 1
    try:
        assert opened.persistence is not None
        yield opened.persistence
    finally:
        async with opened.lock:
            opened.users -= 1
            if opened.users == 0:
                opened.persistence = None
                await opened.stack.aclose()


def _must_exist(target: str, thread_id: str | None, *, empty: bool = False) -> None:
    """Raise `NoDatabase` for a SQLite file a reader finds nothing in.

    That is a file that does not exist (a reader creates nothing), or one `empty` of
    checkpoints (an empty file, or another program's database).
    """
    if not empty and (is_postgres(target) or Path(target).expanduser().exists()):
        return
    missing = f"no thread {thread_id!r}: " if thread_id is not None else ""
    there = "are no checkpoints in" if empty else "is no checkpoint database at"
    raise NoDatabase(
        f"{missing}there {there} {target!r} yet",
        hint="no run has used it: start one with `quorum run`, or point QUORUM_DATA_DIR, "
        "QUORUM_DATABASE or --db at the database your runs use",
    )


async def _has_checkpoints(conn: aiosqlite.Connection) -> bool:
    """Whether a SQLite file holds LangGraph's checkpoint table (a reader does not create it)."""
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'checkpoints'"
    async with conn.execute(query) as cursor:
        return await cursor.fetchone() is not None


async def list_thread_ids(saver: BaseCheckpointSaver) -> list[str]:
    """Ids of every thread in `saver`'s store.

    LangGraph's savers can list checkpoints but not threads; listing every checkpoint to find
    the threads would read the whole store, so this asks the database directly.
    """
    query = "SELECT DISTINCT thread_id FROM checkpoints WHERE checkpoint_ns = ''"
    conn: Any = getattr(saver, "conn", None)
    if isinstance(conn, aiosqlite.Connection):
        async with conn.execute(query) as cursor:
            return [row[0] for row in await cursor.fetchall()]
    async with conn.connection() as pooled, pooled.cursor() as cursor:  # psycopg's pool
        await cursor.execute(query)
        return [row["thread_id"] for row in await cursor.fetchall()]
