"""A run's settings are stored once per run, not in every checkpoint; old threads still read.

Counted in the database file itself: the checkpoint rows' metadata and the store's rows.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

import quorum
from quorum.testing import Script


def _calculating(rounds: int) -> Any:
    def agent(name: str, messages: list[Any]) -> AIMessage:
        done = sum(isinstance(m, ToolMessage) for m in messages)
        if done >= rounds:
            return AIMessage("The answer is 42.")
        call = {"name": "calculator", "args": {"expression": "6 * 7"}, "id": f"c{done}"}
        return AIMessage("", tool_calls=[call])

    return agent


def _metadata(db: str, thread_id: str) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT CAST(metadata AS TEXT) FROM checkpoints WHERE thread_id = ?", (thread_id,)
        ).fetchall()
    return [json.loads(text) for (text,) in rows]


def _run_records(db: str, thread_id: str) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT key, value FROM store WHERE prefix = ?", (f"quorum_runs.{thread_id}",)
        ).fetchall()
    return {key: json.loads(value)["context"] for key, value in rows}


async def test_a_runs_settings_are_stored_once_and_not_in_each_checkpoint(
    script: Script, db: str
) -> None:
    script.on("agent", _calculating(5))

    info = await quorum.run(
        "react", "6*7?", thread_id="t", database=db, context=quorum.QuorumContext(max_steps=9)
    )

    assert info.status == "completed"
    metadata = _metadata(db, "t")
    records = _run_records(db, "t")
    assert len(metadata) >= 12 and len(records) == 1
    assert not [m for m in metadata if "quorum_context" in m]
    # Every checkpoint names the run whose record holds its settings.
    assert {m["run_id"] for m in metadata} == set(records)
    assert next(iter(records.values()))["max_steps"] == 9
    # What is left per checkpoint: LangGraph's own keys, the pattern and the run's id.
    with sqlite3.connect(db) as conn:
        [(mean,)] = conn.execute("SELECT AVG(LENGTH(metadata)) FROM checkpoints").fetchall()
    assert mean < 200, mean


async def test_each_resume_is_a_run_with_its_own_record(script: Script, db: str) -> None:
    def saving(agent: str, messages: list[Any]) -> AIMessage:
        if any(isinstance(m, ToolMessage) for m in messages):
            return AIMessage("saved")
        args = {"path": "note.md", "content": "a note"}
        return AIMessage("", tool_calls=[{"name": "write_file", "args": args, "id": "w1"}])

    script.on("agent", saving)
    context = quorum.QuorumContext(max_steps=6, max_tool_calls=2)
    waiting = await quorum.run("react", "Save a note", thread_id="w", database=db, context=context)
    done = await quorum.resume("w", approve=True, database=db, settings={"max_steps": 8})

    assert (waiting.status, done.status) == ("waiting_approval", "completed")
    records = list(_run_records(db, "w").values())
    assert len(records) == 2
    assert sorted(r["max_steps"] for r in records) == [6, 8]
    # A resume keeps the settings it is not given: each record is the whole context.
    assert [r["max_tool_calls"] for r in records] == [2, 2]
    assert len({m["run_id"] for m in _metadata(db, "w")}) == 2


async def test_a_thread_from_before_keeps_the_settings_in_its_metadata(
    script: Script, db: str
) -> None:
    """Written as an older Quorum did (settings in each checkpoint's metadata); resumed now."""
    from quorum.graphs.debate import builder

    Path(db).parent.mkdir(parents=True, exist_ok=True)
    async with aiosqlite.connect(db) as conn:
        saver = AsyncSqliteSaver(conn, serde=quorum.serializer())
        graph = builder.compile(checkpointer=saver, interrupt_before=["judge"])
        config: Any = {"configurable": {"thread_id": "old"}}
        await graph.ainvoke({"input": "Tabs or spaces?"}, config, context={"max_rounds": 2})
    assert all("quorum_context" in m for m in _metadata(db, "old"))

    done = await quorum.resume("old", database=db)

    assert done.status == "completed" and done.values["round"] == 2
    [record] = _run_records(db, "old").values()
    assert record["max_rounds"] == 2


async def test_deleting_a_thread_deletes_its_run_records(script: Script, db: str) -> None:
    script.on("agent", _calculating(1))
    await quorum.run("react", "6*7?", thread_id="gone", database=db)
    await quorum.run("react", "6*7?", thread_id="kept", database=db)

    await quorum.delete_thread("gone", database=db)

    assert _run_records(db, "gone") == {}
    assert len(_run_records(db, "kept")) == 1
