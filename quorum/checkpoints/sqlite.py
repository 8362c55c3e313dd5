"""The SQLite checkpointer and store: Quorum's default durable state.

WAL lets readers (`quorum threads`, Studio) work while a run writes; `synchronous=NORMAL`
is safe against a process crash (only a power loss can drop the last commits) and skips the
fsync of every commit that the stock FULL does (bench/bench_sqlite_sync.py: FULL costs 2 to
3 times as much per checkpoint on this project's virtual disk; more on a slow physical one);
the busy timeout makes a second process wait for the lock instead of failing at once.

`QuorumSqliteSaver` adds what LangGraph's SQLite saver lacks and `langgraph dev` asks of a
custom checkpointer: deleting the checkpoints of given runs (a rolled-back run), copying a
thread, and pruning threads (keep each namespace's latest checkpoint, or delete them whole).

The checkpoints (with the lease table) and the store (the call journal and the effect ledger)
live in the same file, on two connections: each component runs its own transactions.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.store.sqlite.aio import AsyncSqliteStore

from quorum.checkpoints.serde import strict_serializer
from quorum.errors import ConfigError

BUSY_TIMEOUT_MS = 10_000

# Quorum's state has no DeltaChannel, so a checkpoint needs none of its ancestors' rows: keeping
# the latest one per namespace keeps the whole state (LangGraph's caveat on `prune`).
NOT_LATEST = """(checkpoint_ns, checkpoint_id) NOT IN (
    SELECT checkpoint_ns, MAX(checkpoint_id) FROM checkpoints WHERE thread_id = ?
    GROUP BY checkpoint_ns)"""
OF_RUNS = "json_extract(CAST(metadata AS TEXT), '$.run_id') IN ({marks})"


class QuorumSqliteSaver(AsyncSqliteSaver):
    """LangGraph's async SQLite saver, with run deletion and pruning."""

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) that the runs `run_ids` wrote."""
        runs = [str(run) for run in run_ids]
        if not runs:
            return
        of_runs = OF_RUNS.format(marks=", ".join("?" * len(runs)))
        async with self.lock, self.conn.cursor() as cur:
            await cur.execute(
                "DELETE FROM writes WHERE (thread_id, checkpoint_ns, checkpoint_id) IN ("
                f"SELECT thread_id, checkpoint_ns, checkpoint_id FROM checkpoints WHERE {of_runs})",
                runs,
            )
            await cur.execute(f"DELETE FROM checkpoints WHERE {of_runs}", runs)
            await self.conn.commit()

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of a thread to another thread id.

        One statement per table, for Studio's "copy thread" (LangGraph's fallback re-inserts
        them one by one).
        """
        source, target = str(source_thread_id), str(target_thread_id)
        async with self.lock, self.conn.cursor() as cur:
            await cur.execute(
                "INSERT OR REPLACE INTO checkpoints SELECT ?, checkpoint_ns, checkpoint_id, "
                "parent_checkpoint_id, type, checkpoint, CASE WHEN json_extract("
                "CAST(metadata AS TEXT), '$.thread_id') IS NULL THEN metadata ELSE CAST(json_set("
                "CAST(metadata AS TEXT), '$.thread_id', ?) AS BLOB) END "
                "FROM checkpoints WHERE thread_id = ?",
                (target, target, source),
            )
            await cur.execute(
                "INSERT OR REPLACE INTO writes SELECT ?, checkpoint_ns, checkpoint_id, task_id, "
                "task_path, idx, channel, type, value FROM writes WHERE thread_id = ?",
                (target, source),
            )
            await self.conn.commit()

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Prune threads: `keep_latest` keeps each namespace's latest checkpoint, `delete` all."""
        if isinstance(thread_ids, str):
            raise TypeError("thread_ids must be a sequence of thread ids, not a str")
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}: keep_latest or delete")
        for thread_id in map(str, thread_ids):
            if strategy == "delete":
                await self.adelete_thread(thread_id)
                continue
            async with self.lock, self.conn.cursor() as cur:
                for table in ("writes", "checkpoints"):
                    await cur.execute(
                        f"DELETE FROM {table} WHERE thread_id = ? AND {NOT_LATEST}",
                        (thread_id, thread_id),
                    )
                await self.conn.commit()


@asynccontextmanager
async def _connect(
    path: str | Path, *, autocommit: bool = False
) -> AsyncIterator[aiosqlite.Connection]:
    path = Path(path).expanduser()
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
async def open_sqlite(path: str | Path) -> AsyncIterator[QuorumSqliteSaver]:
    """Open (creating if needed) the checkpoint database at `path`."""
    async with _connect(path) as conn:
        saver = QuorumSqliteSaver(conn, serde=strict_serializer())
        try:
            await saver.setup()
        except sqlite3.DatabaseError as error:
            raise _unusable(path, error) from error
        yield saver


class _ImmediateStore(AsyncSqliteStore):
    """LangGraph's SQLite store, its transactions taking the write lock when they begin.

    The stock store begins a deferred transaction; a batch that reads (a journal lookup)
    then writes (another task's journal entry) must upgrade its read lock, and in WAL mode
    that fails at once with "database is locked", without waiting out the busy timeout, when
    the saver's connection committed in between (16 parallel workers do that within
    seconds). BEGIN IMMEDIATE waits for the lock up front instead.
    """

    @asynccontextmanager
    async def _cursor(self, *, transaction: bool = True) -> AsyncIterator[aiosqlite.Cursor]:
        if not self.is_setup:
            await self.setup()
        async with self.lock:
            if transaction:
                await self.conn.execute("BEGIN IMMEDIATE")
            async with self.conn.cursor() as cursor:
                try:
                    yield cursor
                finally:
                    if transaction:
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
