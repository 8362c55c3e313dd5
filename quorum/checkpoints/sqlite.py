"""The SQLite checkpointer and store: Quorum's default durable state.

WAL lets readers (`quorum threads`, Studio) work while a run writes; `synchronous=NORMAL`
is safe against a process crash (only a power loss can drop the last commits) and skips the
fsync of every commit that the stock FULL does (bench/bench_sqlite_sync.py: FULL costs 2 to
3 times as much per checkpoint on this project's virtual disk; more on a slow physical one);
the busy timeout makes a second process wait for the lock instead of failing at once.

The checkpoints (with the lease table) and the store (the call journal and the effect ledger)
live in the same file, on two connections: each component runs its own transactions.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.store.sqlite.aio import AsyncSqliteStore

from quorum.checkpoints.serde import strict_serializer
from quorum.errors import ConfigError

BUSY_TIMEOUT_MS = 10_000


@asynccontextmanager
async def _connect(
    path: str | Path, *, autocommit: bool = False
) -> AsyncIterator[aiosqlite.Connection]:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(
            path,
            timeout=BUSY_TIMEOUT_MS / 1000,
            # The store runs its own BEGIN/COMMIT; the saver relies on implicit transactions.
            isolation_level=None if autocommit else "",
        )
    except (OSError, sqlite3.Error) as error:
        raise ConfigError(
            f"cannot open the checkpoint database {str(path)!r}: {error}",
            hint="set QUORUM_DATABASE (or --db) to a writable file path",
        ) from error
    try:
        try:
            await conn.executescript(
                f"""
                PRAGMA busy_timeout={BUSY_TIMEOUT_MS};
                PRAGMA journal_mode=WAL;
                PRAGMA synchronous=NORMAL;
                """
            )
        except sqlite3.DatabaseError as error:
            raise _unusable(path, error) from error
        yield conn
    finally:
        await conn.close()


def _unusable(path: str | Path, error: Exception) -> ConfigError:
    return ConfigError(
        f"{str(path)!r} is not a usable checkpoint database: {error}",
        hint="point QUORUM_DATABASE (or --db) at a Quorum database or a new file",
    )


@asynccontextmanager
async def open_sqlite(path: str | Path) -> AsyncIterator[AsyncSqliteSaver]:
    """Open (creating if needed) the checkpoint database at `path`."""
    async with _connect(path) as conn:
        saver = AsyncSqliteSaver(conn, serde=strict_serializer())
        try:
            await saver.setup()
        except sqlite3.DatabaseError as error:
            raise _unusable(path, error) from error
        yield saver


class _ImmediateStore(AsyncSqliteStore):
    """LangGraph's SQLite store, with transactions that take the write lock as they begin.

    The stock store begins a deferred transaction and batches the operations of concurrent
    callers into it: a journal lookup (a read) and another call's journal write land in one
    transaction, whose upgrade from reader to writer fails at once with "database is locked"
    (SQLITE_BUSY_SNAPSHOT, no busy wait) when the checkpointer's connection committed in
    between. `BEGIN IMMEDIATE` waits for the write lock under the busy timeout instead.
    """

    @asynccontextmanager
    async def _cursor(self, *, transaction: bool = True) -> AsyncIterator[aiosqlite.Cursor]:
        async with super()._cursor(transaction=False) as cursor:  # holds the store's lock
            if not transaction:
                yield cursor
                return
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            finally:
                await self.conn.execute("COMMIT")


@asynccontextmanager
async def open_sqlite_store(path: str | Path) -> AsyncIterator[AsyncSqliteStore]:
    """Open (creating if needed) the store in the checkpoint database at `path`."""
    async with _connect(path, autocommit=True) as conn:
        store = _ImmediateStore(conn)
        try:
            # The store's migrations read their version, then alter tables: processes that
            # open a new file at once would each apply them. One at a time, across processes.
            async with _exclusive(Path(f"{path}.setup-lock")):
                await store.setup()
        except sqlite3.DatabaseError as error:
            raise _unusable(path, error) from error
        yield store


@asynccontextmanager
async def _exclusive(lock: Path) -> AsyncIterator[None]:
    """Hold an exclusive advisory lock on the file `lock` (created if missing)."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
