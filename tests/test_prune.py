"""Deleting threads: `quorum threads --prune` by age or count (and `quorum.prune_threads`), with
their journals, effect ledgers and leases, after asking unless `--yes`; and the checkpoint
savers' own run deletion and pruning that `langgraph dev` uses. Rows are counted in the SQLite
file from outside, with the sqlite3 module.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from contextlib import closing
from datetime import UTC, datetime

import pytest
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from typer.testing import CliRunner

import quorum
from quorum.checkpoints import open_checkpointer
from quorum.cli import browse as cli
from quorum.context import QuorumContext
from quorum.settings import get_settings
from quorum.testing import Script

THREADS = ["t1", "t2", "t3", "t4"]


def quorum_cli(*args: str, **kwargs):
    return CliRunner().invoke(cli.app, list(args), **kwargs)


def saving(agent: str, messages: list[BaseMessage]) -> AIMessage:
    """The ReAct agent writes a note (a side effect, in the ledger), then answers."""
    if any(isinstance(m, ToolMessage) for m in messages):
        return AIMessage("saved")
    args = {"path": "note.md", "content": "a note", "overwrite": True}
    return AIMessage("", tool_calls=[{"name": "write_file", "args": args, "id": "w1"}])


@pytest.fixture
def threads(script: Script, monkeypatch: pytest.MonkeyPatch, db: str) -> list[str]:
    """Four finished threads, oldest first, each with checkpoints, a journal and a ledger."""
    monkeypatch.setenv("QUORUM_APPROVE_TOOLS", "write_file")
    get_settings.cache_clear()
    script.on("agent", saving)
    for thread in THREADS:
        assert quorum_cli("run", "react", "Save a note", "--thread", thread).exit_code == 0
    # A lease left by a run whose process died (an expired one), as a crash leaves it.
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("INSERT INTO quorum_leases VALUES ('t1', 'gone:1:x', 0)")
    return THREADS


def rows(db: str, thread: str) -> dict[str, int]:
    """What the database holds of `thread`, table by table."""
    queries = {
        "checkpoints": ("SELECT COUNT(*) FROM checkpoints WHERE thread_id = ?", thread),
        "writes": ("SELECT COUNT(*) FROM writes WHERE thread_id = ?", thread),
        "journal": ("SELECT COUNT(*) FROM store WHERE prefix = ?", f"quorum_journal.{thread}"),
        "ledger": ("SELECT COUNT(*) FROM store WHERE prefix = ?", f"quorum_effects.{thread}"),
        "leases": ("SELECT COUNT(*) FROM quorum_leases WHERE thread_id = ?", thread),
    }
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return {
            name: conn.execute(sql, (arg,)).fetchone()[0] for name, (sql, arg) in queries.items()
        }


def kept(db: str, thread: str) -> bool:
    held = rows(db, thread)
    return all(held[name] > 0 for name in ("checkpoints", "writes", "journal", "ledger"))


def gone(db: str, thread: str) -> bool:
    return set(rows(db, thread).values()) == {0}


def test_prune_keeps_the_newest_and_deletes_every_row_of_the_rest(
    threads: list[str], db: str
) -> None:
    assert rows(db, "t1")["leases"] == 1 and kept(db, "t1")

    pruned = quorum_cli("threads", "--prune", "--keep", "2", "--yes")

    assert pruned.exit_code == 0, pruned.output
    assert pruned.stderr.split() == ["deleted", "2", "thread(s)", "t2", "t1"]
    assert gone(db, "t1") and gone(db, "t2")
    assert kept(db, "t3") and kept(db, "t4")
    listed = json.loads(quorum_cli("threads", "--json").stdout)
    assert [t["thread_id"] for t in listed] == ["t4", "t3"]


def test_prune_by_age(script: Script, db: str) -> None:
    for thread in ("old1", "old2"):
        assert quorum_cli("run", "react", "6*7?", "--thread", thread).exit_code == 0
    time.sleep(2)  # a clear gap between the old threads and the new one (no timing asserted)
    assert quorum_cli("run", "react", "6*7?", "--thread", "new").exit_code == 0
    updated = {
        t["thread_id"]: t["updated_at"] for t in json.loads(quorum_cli("threads", "--json").stdout)
    }
    gap_middle = (
        datetime.fromisoformat(updated["old2"])
        + (datetime.fromisoformat(updated["new"]) - datetime.fromisoformat(updated["old2"])) / 2
    )
    age = datetime.now(UTC) - gap_middle

    deleted = asyncio.run(quorum.prune_threads(older_than=age))

    assert sorted(info.thread_id for info in deleted) == ["old1", "old2"]
    assert gone(db, "old1") and gone(db, "old2") and rows(db, "new")["checkpoints"] > 0


def test_older_than_takes_an_age_with_a_unit(script: Script, db: str) -> None:
    assert quorum_cli("run", "react", "6*7?", "--thread", "recent").exit_code == 0

    week = quorum_cli("threads", "--prune", "--older-than", "7d", "--yes")
    bad = quorum_cli("threads", "--prune", "--older-than", "a week", "--yes")
    none = quorum_cli("threads", "--prune")
    alone = quorum_cli("threads", "--keep", "1")

    assert week.exit_code == 0 and week.stderr.strip() == "deleted 0 thread(s)"
    assert bad.exit_code == 2
    assert bad.stderr.strip() == (
        "error: --older-than 'a week' is not an age (a number and a unit: 30m, 12h, 7d, 2w)"
    )
    assert none.exit_code == 2 and "--prune needs --older-than AGE, --keep N or both" in none.stderr
    assert alone.exit_code == 2 and "add --prune" in alone.stderr
    assert rows(db, "recent")["checkpoints"] > 0


def test_prune_asks_first(threads: list[str], db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    unattended = quorum_cli("threads", "--prune", "--keep", "3")

    assert unattended.exit_code == 2
    assert unattended.stderr.strip() == (
        "error: --prune would delete 1 thread(s) and asks first (add --yes to delete without "
        "asking)"
    )
    monkeypatch.setattr(cli, "_interactive", lambda: True)  # as if at a terminal
    declined = quorum_cli("threads", "--prune", "--keep", "3", input="n\n")
    assert declined.exit_code == 1 and "t1  react  completed" in declined.stderr
    assert kept(db, "t1")

    agreed = quorum_cli("threads", "--prune", "--keep", "3", "--json", input="y\n")

    assert agreed.exit_code == 0, agreed.output
    # (CliRunner echoes the answer typed to stdout, before the JSON.)
    assert json.loads(agreed.stdout[agreed.stdout.index("[") :]) == ["t1"]
    assert gone(db, "t1") and kept(db, "t2")


def test_delete_removes_every_row_of_one_thread(threads: list[str], db: str) -> None:
    deleted = quorum_cli("threads", "--delete", "t1")

    assert deleted.exit_code == 0, deleted.output
    assert gone(db, "t1") and kept(db, "t2")


def test_delete_clears_what_a_studio_deletion_left(threads: list[str], db: str) -> None:
    async def delete_checkpoints() -> None:
        async with open_checkpointer(db) as saver:
            await saver.adelete_thread("t2")  # what DELETE /threads/t2 of langgraph dev does

    asyncio.run(delete_checkpoints())
    left = rows(db, "t2")

    deleted = quorum_cli("threads", "--delete", "t2")
    again = quorum_cli("threads", "--delete", "t2")

    assert left["checkpoints"] == 0 and left["journal"] > 0 and left["ledger"] > 0
    assert deleted.exit_code == 0, deleted.output
    assert gone(db, "t2") and kept(db, "t3")
    assert again.exit_code == 1
    assert "no thread 't2' in the checkpoint store" in again.stderr


async def test_the_saver_prunes_to_the_latest_and_deletes_runs(threads: list[str], db: str) -> None:
    before = rows(db, "t2")
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        run_of_t3 = conn.execute(
            "SELECT DISTINCT json_extract(CAST(metadata AS TEXT), '$.run_id') FROM checkpoints "
            "WHERE thread_id = 't3'"
        ).fetchall()
        namespaces = conn.execute(
            "SELECT COUNT(DISTINCT checkpoint_ns) FROM checkpoints WHERE thread_id = 't2'"
        ).fetchone()[0]

    async with open_checkpointer(db) as saver:
        await saver.aprune(["t2"], strategy="keep_latest")
        await saver.aprune(["t4"], strategy="delete")
        await saver.adelete_for_runs([run for (run,) in run_of_t3])
        latest = await saver.aget_tuple({"configurable": {"thread_id": "t2"}})
        await saver.acopy_thread("t1", "t1-copy")

    assert len(run_of_t3) == 1
    # A short thread's conversation is rebuilt from its first checkpoint on: nothing of that
    # chain may go (test_keep_latest_keeps_a_long_conversation prunes a long one).
    assert rows(db, "t2")["checkpoints"] <= before["checkpoints"]
    assert namespaces == 1
    assert latest is not None and latest.checkpoint["channel_values"]["output"] == "saved"
    assert rows(db, "t3")["checkpoints"] == rows(db, "t3")["writes"] == 0
    assert rows(db, "t4")["checkpoints"] == rows(db, "t4")["writes"] == 0
    assert kept(db, "t1")
    shown = await quorum.get_thread("t2")
    assert (shown.status, shown.output) == ("completed", "saved")
    assert len(shown.checkpoints) == rows(db, "t2")["checkpoints"]
    assert [type(m).__name__ for m in shown.values["messages"]] == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "AIMessage",
    ]
    copied, original = await quorum.get_thread("t1-copy"), await quorum.get_thread("t1")
    assert rows(db, "t1-copy")["checkpoints"] == rows(db, "t1")["checkpoints"]
    assert rows(db, "t1-copy")["writes"] == rows(db, "t1")["writes"]
    assert (copied.status, copied.output) == (original.status, original.output)
    assert [c.checkpoint_id for c in copied.checkpoints] == [
        c.checkpoint_id for c in original.checkpoints
    ]


async def test_keep_latest_keeps_a_long_conversation(script: Script, db: str) -> None:
    """A conversation is stored as each step's new messages (a DeltaChannel, snapshotted every
    100 updates): pruning to the latest state keeps the checkpoints back to the last snapshot,
    and the state read afterwards is the whole conversation."""
    rounds = 70

    def counting(agent: str, messages: list[BaseMessage]) -> AIMessage:
        done = sum(isinstance(m, ToolMessage) for m in messages)
        if done == rounds:
            return AIMessage("counted")
        call = {"name": "calculator", "args": {"expression": f"{done} + 1"}, "id": f"c{done}"}
        return AIMessage("", tool_calls=[call])

    script.on("agent", counting)
    await quorum.run("react", "Count", thread_id="long", context=QuorumContext(max_steps=100))
    before = await quorum.get_thread("long")
    stored_before = rows(db, "long")

    async with open_checkpointer(db) as saver:
        await saver.aprune(["long"], strategy="keep_latest")
    after = await quorum.get_thread("long")
    stored_after = rows(db, "long")

    conversation = [(type(m), m.id, m.content) for m in before.values["messages"]]
    assert len(conversation) == 2 * rounds + 2  # the task, 70 calls and results, the answer
    assert [(type(m), m.id, m.content) for m in after.values["messages"]] == conversation
    assert after.output == before.output == "counted"
    assert 1 < stored_after["checkpoints"] < stored_before["checkpoints"] / 2
    assert stored_after["writes"] < stored_before["writes"]
