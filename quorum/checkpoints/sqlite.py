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
live in the same file, each component with its own connections and transactions.

Writes take one trip to a thread each. aiosqlite runs every statement, cursor, commit and
close as its own trip to its worker thread (about 140 per 4-round ReAct run, where the event
loop spent a quarter of its time waiting): the saver's `aput`/`aput_writes` and every store
batch instead run whole, as LangGraph's synchronous SQLite saver and store, on one writer
thread per component with its own connection. Reads stay on aiosqlite.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiosqlite
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.store.base import Op, PutOp, Result
from langgraph.store.memory import InMemoryStore
from langgraph.store.sqlite import SqliteStore
from langgraph.store.sqlite.aio import AsyncSqliteStore

from quorum.checkpoints import lease
from quorum.checkpoints.serde import strict_serializer
from quorum.errors import ConfigError

BUSY_TIMEOUT_MS = 10_000
PRAGMAS = f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}; PRAGMA synchronous=NORMAL;"

OF_RUNS = "json_extract(CAST(metadata AS TEXT), '$.run_id') IN ({marks})"


class _Writer:
    """One thread, with its own connection to the database, that runs a component's writes.

    A write is one trip to that thread (the statements and the commit together) instead of one
    per statement; one thread keeps the writes in the order they were asked for.
    """

    def __init__(self, path: Path, name: str, *, autocommit: bool = False) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"quorum-{name}")
        self.conn = sqlite3.connect(
            path,
            timeout=BUSY_TIMEOUT_MS / 1000,
            check_same_thread=False,  # used only from the writer thread once open
            isolation_level=None if autocommit else "DEFERRED",
        )
        self.conn.executescript(PRAGMAS)

    async def run(self, call: Callable[..., Any], *args: Any) -> Any:
        """`call(*args)` on the writer thread, awaited without blocking the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(call, *args))

    async def close(self) -> None:
        """Close the connection after the writes already asked for, then end the thread."""
        try:
            await self.run(self.conn.close)
        finally:  # even when cancelled: the close is queued, and the thread ends after it
            self.executor.shutdown(wait=False)


class QuorumSqliteSaver(AsyncSqliteSaver):
    """LangGraph's async SQLite saver, writing on its own thread, with run deletion and pruning."""

    writer: _Writer | None = None
    synchronous: SqliteSaver | None = None

    def write_on(self, writer: _Writer) -> None:
        """Write checkpoints on `writer`'s thread and connection, as LangGraph's sync saver."""
        self.writer = writer
        self.synchronous = SqliteSaver(writer.conn, serde=self.serde)

    async def aput(
        self,
        config: Any,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Any:
        """Save a checkpoint: one trip to the writer thread, the insert and its commit."""
        if self.writer is None or self.synchronous is None:
            return await super().aput(config, checkpoint, metadata, new_versions)
        put = self.synchronous.put
        return await self.writer.run(put, config, checkpoint, metadata, new_versions)

    async def aget_tuple(self, config: Any) -> Any:
        """Read a checkpoint: one trip to the writer thread, after the writes asked before it.

        Through the async connection each statement and fetch is a trip of its own.
        """
        if self.writer is None or self.synchronous is None:
            return await super().aget_tuple(config)
        return await self.writer.run(self.synchronous.get_tuple, config)

    async def aget_delta_channel_history(self, *, config: Any, channels: Sequence[str]) -> Any:
        """Rebuild delta channels' values from their writes: one trip to the writer thread."""
        if self.writer is None or self.synchronous is None:
            return await super().aget_delta_channel_history(config=config, channels=channels)
        history = functools.partial(
            self.synchronous.get_delta_channel_history, config=config, channels=channels
        )
        return await self.writer.run(history)

    async def aput_writes(
        self, config: Any, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        """Save a task's writes: one trip to the writer thread, the inserts and their commit."""
        if self.writer is None or self.synchronous is None:
            return await super().aput_writes(config, writes, task_id, task_path)
        put = self.synchronous.put_writes
        await self.writer.run(put, config, writes, task_id, task_path)

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
        """Prune threads: `keep_latest` keeps each namespace's latest state, `delete` all.

        A conversation is a DeltaChannel (`quorum.state.Messages`): the latest checkpoint
        holds only what its step added, and its messages are rebuilt from the writes of its
        ancestors back to the last snapshot. `keep_latest` keeps that chain (at most one
        snapshot interval of checkpoints) and deletes the rest; LangGraph's own savers refuse
        to prune such a thread. Checkpoints saved after the prune began are never touched.
        """
        if isinstance(thread_ids, str):
            raise TypeError("thread_ids must be a sequence of thread ids, not a str")
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}: keep_latest or delete")
        for thread_id in map(str, thread_ids):
            if strategy == "delete":
                await self.adelete_thread(thread_id)
                continue
            async with (
                self.lock,
                self.conn.execute(
                    "SELECT checkpoint_ns, MAX(checkpoint_id) FROM checkpoints WHERE thread_id = ? "
                    "GROUP BY checkpoint_ns",
                    (thread_id,),
                ) as cursor,
            ):
                heads = list(await cursor.fetchall())
            for namespace, head in heads:
                kept = await self._state_chain(thread_id, namespace, head)
                marks = ", ".join("?" * len(kept))
                async with self.lock, self.conn.cursor() as cur:
                    for table in ("writes", "checkpoints"):
                        await cur.execute(
                            f"DELETE FROM {table} WHERE thread_id = ? AND checkpoint_ns = ? "
                            f"AND checkpoint_id <= ? AND checkpoint_id NOT IN ({marks})",
                            (thread_id, namespace, head, *kept),
                        )
                    await self.conn.commit()

    async def _state_chain(self, thread_id: str, namespace: str, head: str) -> list[str]:
        """The checkpoints the state at `head` is rebuilt from.

        `head`, then its ancestors back to each delta channel's last snapshot (the checkpoint
        that stores the channel's value itself).
        """
        chain: list[str] = []
        config: Any = {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": namespace,
                "checkpoint_id": head,
            }
        }
        owed: set[str] | None = None
        while config is not None and (found := await self.aget_tuple(config)) is not None:
            chain.append(found.checkpoint["id"])
            if owed is None:  # the channels whose value the head does not hold
                owed = set(found.metadata.get("counters_since_delta_snapshot") or ())
            owed -= set(found.checkpoint["channel_values"])
            if not owed:
                break
            config = found.parent_config
        return chain


@asynccontextmanager
async def _connect(
    path: str | Path, *, autocommit: bool = False, read_only: bool = False
) -> AsyncIterator[aiosqlite.Connection]:
    path = Path(path).expanduser()
    if read_only:
        async with _connect_read_only(path) as conn:
            yield conn
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _cannot_open(path, error) from error
    # Connections are made one process at a time: SQLite answers a process that opens a new
    # file while another switches it to WAL "database is locked" at once, without waiting
    # (CI saw it: several `quorum run`s starting on one new file). The lock is a file of its
    # own: the database file is never opened but by SQLite, since closing any other handle
    # on it drops the locks SQLite holds on it in this process.
    async with _exclusive(_setup_lock(path)):
        conn = await _opened(path, autocommit)
    try:
        yield conn
    finally:
        await conn.close()


async def _opened(path: Path, autocommit: bool) -> aiosqlite.Connection:
    """A connection to `path`, in WAL mode with Quorum's settings."""
    try:
        conn = await aiosqlite.connect(
            path,
            timeout=BUSY_TIMEOUT_MS / 1000,
            # The store runs its own BEGIN/COMMIT; the saver relies on implicit transactions.
            isolation_level=None if autocommit else "",
        )
    except (OSError, sqlite3.Error) as error:
        raise _cannot_open(path, error) from error
    try:
        await conn.executescript(f"PRAGMA journal_mode=WAL; {PRAGMAS}")
    except sqlite3.DatabaseError as error:
        await conn.close()
        raise _unusable(path, error) from error
    return conn


def _setup_lock(path: str | Path) -> Path:
    """The file whose lock makes set-up of the database at `path` one process at a time."""
    return Path(f"{Path(path).expanduser()}.setup-lock")


@asynccontextmanager
async def _connect_read_only(path: Path) -> AsyncIterator[aiosqlite.Connection]:
    """Open `path` only to read it: a file or folder a reader may not write still opens.

    A WAL database is read with its shared-memory file, which SQLite creates beside it; in a
    folder it may not write (a read-only mount, another user's data) it cannot, and the file
    is opened as immutable instead: no writer can be adding to it there.
    """
    conn = None
    for mode in ("mode=ro", "immutable=1"):
        try:
            conn = await aiosqlite.connect(
                f"{path.as_uri()}?{mode}", uri=True, timeout=BUSY_TIMEOUT_MS / 1000
            )
            await conn.execute("SELECT count(*) FROM sqlite_master")
            break
        except sqlite3.OperationalError as error:
            if conn is not None:
                await conn.close()
                conn = None
            if mode == "immutable=1":
                raise _unusable(path, error) from error
        except sqlite3.DatabaseError as error:
            if conn is not None:
                await conn.close()
            raise _unusable(path, error) from error
    assert conn is not None
    try:
        yield conn
    finally:
        await conn.close()


def _cannot_open(path: str | Path, error: Exception) -> ConfigError:
    return ConfigError(
        f"cannot open the checkpoint database {str(path)!r}: {error}",
        hint="set QUORUM_DATABASE (or --db) to a writable file path",
    )


def _unusable(path: str | Path, error: Exception) -> ConfigError:
    return ConfigError(
        f"{str(path)!r} is not a usable checkpoint database: {error}",
        hint="point QUORUM_DATABASE (or --db) at a Quorum database or a new file",
    )


@asynccontextmanager
async def open_sqlite(
    path: str | Path, *, read_only: bool = False
) -> AsyncIterator[QuorumSqliteSaver]:
    """Open (creating if needed) the checkpoint database at `path`; `read_only`, only to read."""
    async with _connect(path, read_only=read_only) as conn:
        saver = QuorumSqliteSaver(conn, serde=strict_serializer())
        if read_only:
            saver.is_setup = True  # its tables are there; setting them up would write
            yield saver
            return
        try:
            # LangGraph's set-up switches the file to WAL and creates its tables: processes
            # opening a new file at once would race, and SQLite refuses the loser at once
            # ("database is locked") instead of waiting. One at a time, as the store's.
            async with _exclusive(_setup_lock(path)):
                await saver.setup()
        except sqlite3.DatabaseError as error:
            raise _unusable(path, error) from error
        writer = _Writer(Path(path).expanduser(), "checkpoints")
        saver.write_on(writer)
        try:
            yield saver
        finally:
            await writer.close()


class _ImmediateStore(SqliteStore):
    """LangGraph's SQLite store, its transactions taking the write lock when they begin.

    The stock store begins a deferred transaction; a batch that reads (a journal lookup)
    then writes (another task's journal entry) must upgrade its read lock, and in WAL mode
    that fails at once with "database is locked", without waiting out the busy timeout, when
    the saver's connection committed in between (16 parallel workers do that within
    seconds). BEGIN IMMEDIATE waits for the lock up front instead.
    """

    @contextmanager
    def _cursor(self, *, transaction: bool = True) -> Iterator[sqlite3.Cursor]:
        with self.lock:
            if transaction:
                self.conn.execute("BEGIN IMMEDIATE")
            cursor = self.conn.cursor()
            try:
                yield cursor
            except BaseException:
                if transaction:
                    self.conn.execute("ROLLBACK")
                raise
            else:
                if transaction:
                    self.conn.execute("COMMIT")
            finally:
                cursor.close()

    def put_fenced(
        self,
        namespace: tuple[str, ...],
        key: str,
        value: dict[str, Any],
        thread_id: str,
        holder: str,
    ) -> None:
        """Put one item if `holder` still holds `thread_id`'s lease, in one transaction.

        BEGIN IMMEDIATE holds the write lock from the check to the commit: a run taking the
        lease over waits for it, or has already taken it and the write is refused.
        """
        with self._cursor() as cursor:
            cursor.execute(lease.HOLDER, (thread_id,))
            row = cursor.fetchone()
            if row is None or row[0] != holder:
                raise lease.lost(thread_id)
            self._batch_put_ops([(0, PutOp(namespace, key, value, index=False))], cursor)


class _WriterStore(AsyncSqliteStore):
    """LangGraph's async SQLite store, each batch run whole on the writer thread."""

    def __init__(self, conn: aiosqlite.Connection, writer: _Writer) -> None:
        super().__init__(conn)
        self.writer = writer
        self.synchronous = _ImmediateStore(writer.conn)
        self.synchronous.is_setup = True  # the async store sets the tables up

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Run a batch of store operations in one transaction on the writer thread."""
        return await self.writer.run(self.synchronous.batch, list(ops))

    async def aput_fenced(
        self,
        namespace: tuple[str, ...],
        key: str,
        value: dict[str, Any],
        *,
        thread_id: str,
        holder: str,
    ) -> None:
        """Put one item unless another run has taken `thread_id`'s lease from `holder`."""
        await self.writer.run(self.synchronous.put_fenced, namespace, key, value, thread_id, holder)


@asynccontextmanager
async def open_sqlite_store(
    path: str | Path, *, read_only: bool = False
) -> AsyncIterator[AsyncSqliteStore | InMemoryStore]:
    """Open (creating if needed) the store in the checkpoint database at `path`."""
    async with _connect(path, autocommit=True, read_only=read_only) as conn:
        if read_only:
            async with conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'store'"
            ) as cursor:
                present = await cursor.fetchone() is not None
            # A database only a checkpointer of your own wrote has no store: no journal, no
            # ledger, so an empty one reads the same (and a reader must not create tables).
            reader = AsyncSqliteStore(conn) if present else InMemoryStore()
            if isinstance(reader, AsyncSqliteStore):
                reader.is_setup = True
            yield reader
            return
        writer = _Writer(Path(path).expanduser(), "store", autocommit=True)
        try:
            store = _WriterStore(conn, writer)
            try:
                # The store's migrations read their version, then alter tables: processes
                # that open a new file at once would each apply them. One at a time, across
                # processes.
                async with _exclusive(_setup_lock(path)):
                    await store.setup()
            except sqlite3.DatabaseError as error:
                raise _unusable(path, error) from error
            yield store
        finally:
            await writer.close()


@asynccontextmanager
async def _exclusive(lock: Path) -> AsyncIterator[None]:
    """Hold an exclusive advisory lock on the file `lock` (created if missing)."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
