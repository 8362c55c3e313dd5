"""The SQLite checkpoint store: its settings, its errors, and strict deserialisation."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from pydantic import BaseModel, model_validator

from quorum.checkpoints import open_checkpointer
from quorum.errors import ConfigError

REVIVED: list[str] = []


class Payload(BaseModel):
    """Stands for any class an attacker names in a tampered checkpoint."""

    note: str

    @model_validator(mode="after")
    def record(self) -> Payload:
        REVIVED.append(self.note)
        return self


async def test_sqlite_is_wal_normal_with_busy_timeout(tmp_path: Path) -> None:
    async with open_checkpointer(str(tmp_path / "q.db")) as saver:
        conn = saver.conn  # type: ignore[attr-defined]
        pragmas = {}
        for name in ("journal_mode", "synchronous", "busy_timeout"):
            async with conn.execute(f"PRAGMA {name}") as cursor:
                pragmas[name] = (await cursor.fetchone())[0]

        # Checkpoints are committed on the writer thread's own connection: the same there.
        writer = saver.writer  # type: ignore[attr-defined]

        def writer_pragmas() -> dict[str, object]:
            names = ("journal_mode", "synchronous", "busy_timeout")
            return {n: writer.conn.execute(f"PRAGMA {n}").fetchone()[0] for n in names}

        on_writer = await writer.run(writer_pragmas)

    assert pragmas == {"journal_mode": "wal", "synchronous": 1, "busy_timeout": 10_000}
    assert on_writer == pragmas


async def test_tampered_checkpoint_cannot_revive_foreign_types(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"input": Payload(note="attacker")}
    async with aiosqlite.connect(path) as conn:
        # LangGraph's default serializer writes any class; this is what an attacker can store.
        writer = AsyncSqliteSaver(conn)
        await writer.aput(config, checkpoint, {}, {})
    REVIVED.clear()

    async with open_checkpointer(str(path)) as saver:
        loaded = await saver.aget_tuple(config)

    assert loaded is not None
    assert not isinstance(loaded.checkpoint["channel_values"]["input"], Payload)
    assert REVIVED == []


async def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database " * 100)

    with pytest.raises(ConfigError, match="is not a usable checkpoint database") as error:
        async with open_checkpointer(str(path)):
            pass

    assert "QUORUM_DATABASE" in str(error.value)
    assert path.read_text().startswith("not a database")  # nothing was overwritten


async def test_unwritable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")

    with pytest.raises(ConfigError, match="cannot open the checkpoint database"):
        async with open_checkpointer(str(blocker / "sub" / "q.db")):
            pass


def _open_at_once(path: str, start: Any, outcomes: Any) -> None:
    """Open the checkpointer and store at `path` the moment every process is ready."""
    import asyncio

    from quorum.checkpoints import open_persistence

    async def opened() -> None:
        async with open_persistence(path):
            pass

    start.wait()
    try:
        asyncio.run(opened())
        outcomes.put("ok")
    except Exception as error:  # the outcome is the test's to judge, in the parent
        outcomes.put(repr(error))


def test_processes_opening_one_new_file_at_once_all_open_it(tmp_path: Path) -> None:
    # Several `quorum run`s started together on a new database: each must open it (CI saw
    # one refused with "database is locked" while another switched the file to WAL).
    context = multiprocessing.get_context("fork")
    start, outcomes = context.Barrier(8), context.Queue()
    path = str(tmp_path / "new.db")
    processes = [
        context.Process(target=_open_at_once, args=(path, start, outcomes)) for _ in range(8)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [outcomes.get(timeout=5) for _ in processes] == ["ok"] * 8
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
