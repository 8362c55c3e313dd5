"""The PostgreSQL checkpointer, against a real server started by `.ci/postgres` on loopback."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

import quorum
from quorum.checkpoints import open_checkpointer
from quorum.errors import ConfigError, RunFailed
from quorum.settings import get_settings
from quorum.state import Verdict
from quorum.testing import Script, stating


async def test_runs_persist_and_list_in_postgres(script: Script, database: str) -> None:
    debate = await quorum.run("debate", "Tabs or spaces?", database=database, thread_id="d1")
    await quorum.run("react", "6*7?", database=database, thread_id="r1")

    listed = await quorum.list_threads(database=database)
    reloaded = await quorum.get_thread("d1", database=database)

    assert {(t.thread_id, t.pattern, t.status) for t in listed} == {
        ("d1", "debate", "completed"),
        ("r1", "react", "completed"),
    }
    assert isinstance(reloaded.values["verdict"], Verdict)
    assert reloaded.output == debate.output
    assert [h.agents for h in reloaded.history][:2] == [["moderator"], ["debater_a", "debater_b"]]


async def test_failed_run_resumes_from_postgres(script: Script, database: str) -> None:
    failures = iter([RuntimeError("judge is out")])

    def flaky(agent, messages):
        if error := next(failures, None):
            raise error
        if not stating(messages):
            return "a argued better."
        return {"final_answer": "forty-two", "winner": "a", "confidence": 0.5}

    script.on("judge", flaky)
    with pytest.raises(RunFailed, match="agent 'judge' failed"):
        await quorum.run("debate", "Q?", database=database, thread_id="f1")
    debaters = script.count("debater_a")

    resumed = await quorum.resume("f1", database=database)

    assert resumed.status == "completed"
    assert script.count("debater_a") == debaters  # nothing before the judge ran again


async def test_concurrent_runs_share_a_bounded_pool_of_connections(
    script: Script, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs in flight in one process share a pool per component (saver, store): counted at
    the server, the connections never pass the setting's bound, and every run completes."""
    monkeypatch.setenv("QUORUM_POSTGRES_POOL_SIZE", "2")
    get_settings.cache_clear()
    script.delay = 0.05
    name = database.rsplit("/", 1)[1]
    seen: list[int] = []
    done = asyncio.Event()

    async def count_connections() -> None:
        async with await psycopg.AsyncConnection.connect(database, autocommit=True) as watcher:
            while not done.is_set():
                cursor = await watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                    "pg_backend_pid()",
                    (name,),
                )
                row = await cursor.fetchone()
                assert row is not None
                seen.append(row[0])
                await asyncio.sleep(0.005)

    watching = asyncio.create_task(count_connections())
    try:
        ran = await asyncio.gather(
            *(quorum.run("react", "6*7?", database=database, thread_id=f"p{n}") for n in range(8))
        )
    finally:
        done.set()
        await watching

    assert [info.status for info in ran] == ["completed"] * 8
    assert seen and max(seen) <= 2 * 2  # two pools of at most two connections each
    assert max(seen) >= 2


async def test_unreachable_postgres_is_a_clear_error(script: Script) -> None:
    with pytest.raises(ConfigError, match="cannot connect to the PostgreSQL checkpoint database"):
        await quorum.run("react", "hi", database="postgresql://quorum@127.0.0.1:9/none")


def _rows(database: str, table: str, thread: str) -> int:
    with psycopg.connect(database) as conn:
        found = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE thread_id = %s", (thread,))
        return int(found.fetchone()[0])


async def test_prune_fork_and_run_deletion_in_postgres(script: Script, database: str) -> None:
    for thread in ("p1", "p2", "p3"):
        await quorum.run("react", "6*7?", database=database, thread_id=thread)
    with psycopg.connect(database) as conn:
        runs = conn.execute(
            "SELECT DISTINCT metadata->>'run_id' FROM checkpoints WHERE thread_id = 'p3'"
        ).fetchall()

    pruned = await quorum.prune_threads(keep=2, database=database)
    shown = await quorum.get_thread("p2", database=database)
    agent = next(c for c in shown.checkpoints if c.agents == ["agent"] and c.step > 1)
    calls = len(script.calls)
    forked = await quorum.resume("p2", checkpoint_id=agent.checkpoint_id, database=database)
    async with open_checkpointer(database) as saver:
        await saver.adelete_for_runs([run for (run,) in runs])

    assert [info.thread_id for info in pruned] == ["p1"]
    assert _rows(database, "checkpoints", "p1") == _rows(database, "checkpoint_writes", "p1") == 0
    with psycopg.connect(database) as conn:
        journal = conn.execute("SELECT COUNT(*) FROM store WHERE prefix LIKE 'quorum_%.p1'")
        assert journal.fetchone()[0] == 0
    assert forked.status == "completed" and len(script.calls) == calls + 1
    assert len(runs) == 1
    assert _rows(database, "checkpoints", "p3") == _rows(database, "checkpoint_writes", "p3") == 0
    assert _rows(database, "checkpoints", "p2") > 0
