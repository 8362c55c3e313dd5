"""The PostgreSQL checkpointer and store, used when the database setting is a postgresql:// URL.

Each opens a psycopg connection pool (up to `QUORUM_POSTGRES_POOL_SIZE` connections), so the
runs in flight in a process do not queue on one connection. LangGraph's PostgreSQL saver
deletes and prunes threads; Quorum's adds deleting the checkpoints of given runs, which
`langgraph dev` asks of a custom checkpointer (a rolled-back run).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

from quorum.checkpoints import lease
from quorum.checkpoints.serde import strict_serializer
from quorum.errors import ConfigError
from quorum.settings import get_settings


@asynccontextmanager
async def _connect(url: str) -> AsyncIterator[Any]:
    try:
        import psycopg
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool
    except ImportError as error:
        raise ConfigError(
            "PostgreSQL checkpoints need the postgres extra",
            hint="pip install 'quorum[postgres]'",
        ) from error
    # The saver and the store read rows by column name, and manage their transactions.
    options: dict[str, Any] = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    try:
        # One connection first: a pool that cannot connect only times out, and the
        # server's own reason (refused, bad password, no such database) is what helps.
        probe = await psycopg.AsyncConnection.connect(url, **options)
    except psycopg.Error as error:
        raise ConfigError(
            f"cannot connect to the PostgreSQL checkpoint database: {error}".strip(),
            hint="check the URL in QUORUM_DATABASE (or --db) and that the server is up",
        ) from error
    await probe.close()
    pool = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=get_settings().postgres_pool_size,
        kwargs=options,
        open=False,
    )
    await pool.open(wait=True)
    try:
        yield pool
    finally:
        await pool.close()


@asynccontextmanager
async def open_postgres(url: str) -> AsyncIterator[Any]:
    """Open the checkpoint tables at `url`, creating them if needed."""
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    class QuorumPostgresSaver(AsyncPostgresSaver):
        """LangGraph's async PostgreSQL saver, with run deletion."""

        async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
            """Delete the checkpoints (and their writes) that the runs `run_ids` wrote."""
            runs = [str(run) for run in run_ids]
            if not runs:
                return
            # Blobs are shared by checkpoints by channel version: the other runs' need them.
            async with self._cursor() as cur, cur.connection.transaction():
                await cur.execute(
                    "DELETE FROM checkpoint_writes w USING checkpoints c WHERE "
                    "w.thread_id = c.thread_id AND w.checkpoint_ns = c.checkpoint_ns AND "
                    "w.checkpoint_id = c.checkpoint_id AND c.metadata->>'run_id' = ANY(%s)",
                    (runs,),
                )
                await cur.execute(
                    "DELETE FROM checkpoints WHERE metadata->>'run_id' = ANY(%s)", (runs,)
                )

    async with _connect(url) as pool:
        saver = QuorumPostgresSaver(pool, serde=strict_serializer())
        async with _one_setup_at_a_time(pool):
            await saver.setup()
        yield saver


@asynccontextmanager
async def open_postgres_store(url: str) -> AsyncIterator[Any]:
    """Open the store tables at `url`, creating them if needed."""
    from langgraph.store.postgres.aio import AsyncPostgresStore
    from psycopg.types.json import Jsonb

    class QuorumPostgresStore(AsyncPostgresStore):
        """LangGraph's async PostgreSQL store, with writes fenced by a thread's lease."""

        async def aput_fenced(
            self,
            namespace: tuple[str, ...],
            key: str,
            value: dict[str, Any],
            *,
            thread_id: str,
            holder: str,
        ) -> None:
            """Put one item unless another run has taken `thread_id`'s lease from `holder`.

            One statement, so one round trip: it reads the lease row FOR SHARE and inserts
            only if `holder` holds it, and commits both at once. A run taking the lease
            over waits for that commit, or has already taken it and nothing is inserted.
            """
            async with cast(Any, self.conn).connection() as conn:  # the store's own pool
                cursor = await conn.execute(
                    FENCED_PUT,
                    (thread_id, holder, ".".join(namespace), key, Jsonb(value)),
                )
                if await cursor.fetchone() is None:
                    raise lease.lost(thread_id)

    async with _connect(url) as pool:
        store = QuorumPostgresStore(pool)
        async with _one_setup_at_a_time(pool):
            await store.setup()
        yield store


FENCED_PUT = """WITH fence AS (
    SELECT 1 FROM quorum_leases WHERE thread_id = %s AND holder = %s FOR SHARE
)
INSERT INTO store (prefix, key, value, created_at, updated_at, expires_at, ttl_minutes)
SELECT %s, %s, %s, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, NULL, NULL FROM fence
ON CONFLICT (prefix, key) DO UPDATE SET value = EXCLUDED.value, updated_at = CURRENT_TIMESTAMP,
    expires_at = NULL, ttl_minutes = NULL
RETURNING 1"""
"""A fenced journal or ledger write: the row LangGraph's store writes for an item without TTL
(a namespace is its parts joined by dots), inserted only while the lease row, locked FOR
SHARE until the commit, names the writer. Four round trips (begin, read the lease, insert,
commit) become one: each model call journals its reply."""

SETUP_LOCK = 0x71756F72
"""The advisory lock key held while the tables are set up ("quor")."""
SETUP_POLL = 0.05
"""Seconds between tries for that lock."""


@asynccontextmanager
async def _one_setup_at_a_time(pool: Any) -> AsyncIterator[None]:
    """Hold a session advisory lock while LangGraph's migrations run.

    They read their version, then apply what is missing: processes that open a new database
    at once would each apply them and all but one fail on a duplicate version row. One at a
    time, across processes and machines (the SQLite side does the same with a file lock).
    The lock is held by one pooled connection while the migrations run on another.
    """
    async with pool.connection() as conn:
        # Polled, not waited for: a session blocked in pg_advisory_lock keeps a statement
        # open, and the store's CREATE INDEX CONCURRENTLY (run by the lock's holder) waits
        # for every open statement to end, so the two would deadlock.
        while True:
            cursor = await conn.execute("SELECT pg_try_advisory_lock(%s) AS taken", (SETUP_LOCK,))
            row = await cursor.fetchone()
            if row is not None and row["taken"]:
                break
            await asyncio.sleep(SETUP_POLL)
        try:
            yield
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK,))
