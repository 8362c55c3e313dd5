"""Durable state: the checkpointer every Quorum run (CLI, Python, Studio) saves to.

`open_checkpointer()` opens the store the settings name: a SQLite file by default, or
PostgreSQL when the setting is a postgresql:// URL. langgraph.json points Studio at it too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite
from langgraph.checkpoint.base import BaseCheckpointSaver

from quorum.checkpoints.postgres import open_postgres
from quorum.checkpoints.sqlite import open_sqlite
from quorum.settings import get_settings


def is_postgres(target: str) -> bool:
    """Whether `target` names a PostgreSQL database rather than a SQLite file."""
    return target.startswith(("postgres://", "postgresql://"))


@asynccontextmanager
async def open_checkpointer(target: str | None = None) -> AsyncIterator[BaseCheckpointSaver]:
    """Open the checkpoint store `target` (default: the settings' database)."""
    target = target or get_settings().database_target
    opener = open_postgres if is_postgres(target) else open_sqlite
    async with opener(target) as saver:
        yield saver


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
    async with conn.cursor() as cursor:  # psycopg
        await cursor.execute(query)
        return [row["thread_id"] for row in await cursor.fetchall()]
