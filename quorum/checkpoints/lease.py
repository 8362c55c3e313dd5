"""One run per thread: a lease row in the checkpoint database, renewed while the run lives.

Starting or resuming a thread takes its lease: a row with the holder (host, process, run)
and an expiry. The run renews it every third of its length while it lives, and deletes it
when it ends. A second run of the same thread, from any process on any machine that shares
the database, finds a live lease and stops at once, saying who holds it. A holder that died
stops renewing, so its lease expires and the thread can be resumed; on the same host a
holder whose process is gone is known dead at once (a pid says nothing on another host, nor
when it has been reused, so that is only ever a shortcut, never the rule).

The row is written with one atomic statement (an upsert that only replaces an expired or
own lease), the same on SQLite and PostgreSQL. Written by hand: LangGraph's savers have no
notion of a thread being busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, cast

from quorum.errors import LeaseLost, ThreadBusy

logger = logging.getLogger(__name__)

SCHEMA = """CREATE TABLE IF NOT EXISTS quorum_leases (
    thread_id TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
)"""

HOLDER = "SELECT holder FROM quorum_leases WHERE thread_id = ?"
"""Who holds a thread's lease: what a fenced write checks in its own transaction."""

ACQUIRE = """INSERT INTO quorum_leases (thread_id, holder, expires_at) VALUES (?, ?, ?)
ON CONFLICT (thread_id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE quorum_leases.expires_at < ? OR quorum_leases.holder IN (excluded.holder, ?)"""


def lost(thread_id: str) -> LeaseLost:
    """The error of a fenced write by a run that no longer holds `thread_id`."""
    return LeaseLost(
        f"thread {thread_id!r} was taken over by another run while this one stalled past its "
        "lease; this run's reply or side effect was not recorded",
        hint="the other run goes on with the thread; see `quorum show` for where it stands",
    )


@dataclass(frozen=True)
class Lease:
    """Who holds a thread, and until when (seconds since the epoch)."""

    thread_id: str
    holder: str
    expires_at: float

    @property
    def live(self) -> bool:
        """Whether the lease still holds: not expired, and not held by a process known dead."""
        return self.expires_at > time.time() and not _holder_dead(self.holder)

    def describe(self) -> str:
        """Who holds it, for a person."""
        host, pid, _ = (self.holder.split(":") + ["", ""])[:3]
        left = max(self.expires_at - time.time(), 0)
        return f"process {pid} on {host} (lease renewed until {left:.0f} s from now)"


class Leases:
    """The lease table of one checkpoint database."""

    def __init__(
        self,
        conn: Any,
        lock: asyncio.Lock,
        dialect: Literal["sqlite", "postgres"],
        writer: Any = None,
    ) -> None:
        self.conn = conn
        self.lock = lock
        self.dialect = dialect
        self.writer = writer
        """A SQLite saver's writer thread (`quorum.checkpoints.sqlite`): a statement and its
        commit are one trip there, where on `conn` each is a trip of its own."""
        self.absent = False
        """No lease table, in a database opened only to read that no Quorum run has held a
        lease in (one only the LangGraph server wrote): no thread is leased."""

    async def setup(self) -> None:
        """Create the table if it is missing."""
        await self._execute(SCHEMA)

    async def check_present(self) -> None:
        """Note whether the table is there, without creating it (for a read-only database)."""
        if self.dialect == "sqlite":
            found = await self._execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'quorum_leases'"
            )
            self.absent = not found

    async def get(self, thread_id: str) -> Lease | None:
        """The lease on `thread_id`, live or not."""
        if self.absent:
            return None
        rows = await self._execute(
            "SELECT thread_id, holder, expires_at FROM quorum_leases WHERE thread_id = ?",
            (thread_id,),
        )
        return Lease(*rows[0]) if rows else None

    async def live(self) -> dict[str, Lease]:
        """Every live lease, by thread."""
        if self.absent:
            return {}
        rows = await self._execute(
            "SELECT thread_id, holder, expires_at FROM quorum_leases WHERE expires_at > ?",
            (time.time(),),
        )
        leases = (Lease(*row) for row in rows)
        return {lease.thread_id: lease for lease in leases if lease.live}

    async def acquire(self, thread_id: str, holder: str, seconds: float) -> Lease | None:
        """Take the lease; None if taken, else the live lease that stopped it.

        One statement when the thread is free (the common case: it returns the row it
        wrote); a lease in the way is read, and taken over if its holder is known dead.
        """
        if await self._take(thread_id, holder, seconds, dead=""):
            return None
        current = await self.get(thread_id)
        if current is None or not current.live:
            # Gone since, or its holder is known dead, which is as good as expired: take it
            # over (only its: if another run took it over first, that run's lease stands).
            dead = current.holder if current is not None else ""
            if await self._take(thread_id, holder, seconds, dead=dead):
                return None
            current = await self.get(thread_id)
        return current

    async def _take(self, thread_id: str, holder: str, seconds: float, *, dead: str) -> bool:
        """Write our lease unless a live one of another holder (not `dead`) is in the way."""
        now = time.time()
        params = (thread_id, holder, now + seconds, now, dead)
        if self.dialect == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
            # No RETURNING before SQLite 3.35 (RHEL 8 has 3.26): read the row back.
            await self._execute(ACQUIRE, params)
            rows = await self._execute(HOLDER, (thread_id,))
        else:
            rows = await self._execute(ACQUIRE + " RETURNING holder", params)
        return bool(rows) and rows[0][0] == holder

    async def renew(self, thread_id: str, holder: str, seconds: float) -> bool:
        """Extend our lease; False if it is no longer ours."""
        await self._execute(
            "UPDATE quorum_leases SET expires_at = ? WHERE thread_id = ? AND holder = ?",
            (time.time() + seconds, thread_id, holder),
        )
        current = await self.get(thread_id)
        return current is not None and current.holder == holder

    async def release(self, thread_id: str, holder: str) -> None:
        """Give our lease up."""
        await self._execute(
            "DELETE FROM quorum_leases WHERE thread_id = ? AND holder = ?", (thread_id, holder)
        )

    async def delete(self, thread_id: str) -> None:
        """Forget any lease on `thread_id` (the thread is being deleted)."""
        await self._execute("DELETE FROM quorum_leases WHERE thread_id = ?", (thread_id,))

    async def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.dialect == "sqlite" and self.writer is not None:
            return cast(
                list[tuple[Any, ...]],
                await self.writer.run(_committed, self.writer.conn, sql, params),
            )
        async with self.lock:
            if self.dialect == "sqlite":
                cursor = await self.conn.execute(sql, params)
                rows = await cursor.fetchall()
                await cursor.close()
                await self.conn.commit()
                return [tuple(row) for row in rows]
            # psycopg, autocommit; the saver's connection pool
            async with self.conn.connection() as conn, conn.cursor() as cursor:
                await cursor.execute(sql.replace("?", "%s"), params)
                rows = await cursor.fetchall() if cursor.description else []
                return [tuple(row.values()) if isinstance(row, dict) else row for row in rows]


def _committed(conn: Any, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Run one statement on a SQLite connection and commit it (on the connection's thread)."""
    try:
        rows = conn.execute(sql, params).fetchall()
        if conn.in_transaction:
            conn.commit()
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    return [tuple(row) for row in rows]


def new_holder() -> str:
    """An id for one run: host, process and a nonce (two runs in one process differ)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _holder_dead(holder: str) -> bool:
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's process: only the expiry can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@contextlib.asynccontextmanager
async def hold(leases: Leases, thread_id: str, seconds: float) -> AsyncIterator[Lease]:
    """Hold the lease on `thread_id` while the block runs, or raise `ThreadBusy` at once."""
    holder = new_holder()
    taken = await leases.acquire(thread_id, holder, seconds)
    if taken is not None:
        raise ThreadBusy(
            f"thread {thread_id!r} is busy: {taken.describe()} is running it",
            hint="wait for that run to finish; if its process died, the thread is free once "
            "the lease expires",
        )
    lost = asyncio.Event()
    running = asyncio.current_task()

    async def keep() -> None:
        while True:
            await asyncio.sleep(seconds / 3)
            try:
                still_ours = await leases.renew(thread_id, holder, seconds)
            except Exception:  # a database hiccup: the next renewal may work
                logger.warning("could not renew the lease on thread %s", thread_id, exc_info=True)
                continue
            if not still_ours:
                # Another run took the thread over (this one stalled past its lease): stop
                # before the two write the same thread.
                lost.set()
                if running is not None:
                    running.cancel(f"lost the lease on thread {thread_id}")
                return

    keeper = asyncio.create_task(keep(), name=f"quorum-lease-{thread_id}")
    try:
        yield Lease(thread_id, holder, time.time() + seconds)
    except asyncio.CancelledError:
        if lost.is_set():
            raise ThreadBusy(
                f"thread {thread_id!r} was taken over by another run while this one stalled",
                hint="its last checkpoint is kept; see `quorum show`",
            ) from None
        raise
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        with contextlib.suppress(Exception):
            await asyncio.shield(leases.release(thread_id, holder))
