"""Many processes, one thread or one database: one run per thread, no forks, no lock errors.

Everything runs as real `quorum` processes against the scripted OpenAI-compatible stub; what
is checked is read from outside them: exit codes and stderr, requests at the stub, and the
checkpoint rows in the database (SQLite, and PostgreSQL started by `.ci/postgres`).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from quorum.testing import forks
from quorum.testing.stub import OpenAIStub, quorum_env
from tests.test_crash import quorum as quorum_process


def after_tool(body: dict) -> bool:
    """The agent's second call: it has the calculator's result."""
    return any(m.get("role") == "tool" for m in body["messages"])


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as running:
        yield running


def checkpoint_parents(target: str, thread: str) -> list[tuple[str, str | None]]:
    """(checkpoint id, parent id) of every top-level checkpoint of `thread`."""
    query = (
        "SELECT checkpoint_id, parent_checkpoint_id FROM checkpoints "
        "WHERE thread_id = %s AND checkpoint_ns = ''"
    )
    if target.startswith("postgresql://"):
        with psycopg.connect(target) as conn:
            return [tuple(row) for row in conn.execute(query, (thread,)).fetchall()]
    with sqlite3.connect(target) as conn:
        return conn.execute(query.replace("%s", "?"), (thread,)).fetchall()


def assert_one_chain(parents: list[tuple[str, str | None]]) -> None:
    """The checkpoints form one line from the first to the last: no step forked it."""
    children: dict[str | None, list[str]] = {}
    for checkpoint, parent in parents:
        children.setdefault(parent, []).append(checkpoint)
    forks = {parent: kids for parent, kids in children.items() if len(kids) > 1}
    assert not forks, forks
    chain, at = [], None
    while at in children:
        at = children[at][0]
        chain.append(at)
    assert len(chain) == len(parents)


def reap(processes: list[forks.Forked]) -> None:
    for process in processes:
        process.kill()
        process.communicate()


def run_workers(
    script: str, argvs: list[list[str]], env: dict[str, str], cwd: Path, timeout: float
) -> tuple[list[forks.Forked], list[tuple[str, str]]]:
    """Run `script` in one process per argument list, all at once; their (stdout, stderr)."""
    processes: list[forks.Forked] = []
    try:
        for argv in argvs:
            processes.append(
                forks.start(
                    argv,
                    code=script,
                    env=env,
                    cwd=cwd,
                    text=True,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )  # fmt: skip
            )
        return processes, [p.communicate(timeout=timeout) for p in processes]
    finally:
        reap(processes)


@pytest.mark.slow
def test_four_resumes_of_a_crashed_thread_one_runs(
    target: str, stub: OpenAIStub, tmp_path: Path
) -> None:
    env = quorum_env(stub, tmp_path) | {"QUORUM_DATABASE": target}
    crashing = stub.hold(after_tool)
    run = quorum_process(
        "run", "react", "What is 6 times 7?", "--thread", "x1", env=env, cwd=tmp_path
    )
    try:
        assert crashing.arrived.wait(60)
        run.kill()
    finally:
        reap([run])
        crashing.release()
    before = len(stub.chat_requests())

    resuming = stub.hold(after_tool)  # the one run that goes on waits here until all are done
    resumes = [quorum_process("resume", "x1", env=env, cwd=tmp_path) for _ in range(4)]
    try:
        assert resuming.arrived.wait(60)
        deadline = time.monotonic() + 60
        while sum(p.poll() is not None for p in resumes) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        resuming.release()
        outcomes = [(p.pid, *p.communicate(timeout=60)) for p in resumes]
    finally:
        reap(resumes)

    codes = [p.returncode for p in resumes]
    assert sorted(codes) == [0, 3, 3, 3], outcomes
    winner = resumes[codes.index(0)].pid
    for pid, _, err in outcomes:
        if pid == winner:
            assert "thread x1  status completed" in err
            continue
        (line,) = err.strip().splitlines()
        assert line.startswith(
            f"error: thread 'x1' is busy: process {winner} on {socket.gethostname()} "
        ), line
    # The call cut short by the crash was asked again once, by the one run.
    assert len(stub.chat_requests()) == before + 1
    assert sum(not after_tool(r.body or {}) for r in stub.chat_requests()) == 1
    assert_one_chain(checkpoint_parents(target, "x1"))
    listed = quorum_process("threads", "--json", env=env, cwd=tmp_path)
    out, err = listed.communicate(timeout=60)
    assert [(t["thread_id"], t["status"]) for t in json.loads(out)] == [("x1", "completed")], err


DRIVER = """
import sys
from quorum.cli import app

codes = []
for run in range(int(sys.argv[2])):
    try:
        app(["run", "react", "What is 6 times 7?", "--thread", f"{sys.argv[1]}-{run}"])
    except SystemExit as stop:
        codes.append(stop.code or 0)
print("exit codes", *codes)
"""
"""One process making runs one after another, through the CLI's own entry point."""


# Runs per process, and threads the competing workers are offered: eight writers at once on
# one file is the contention measured; the counts were 25 and 100 until the suite's time was
# counted (the same runs, more of them).
RUNS_EACH = 12
COMPETED = 48


@pytest.mark.slow
def test_eight_processes_of_12_runs_share_one_sqlite_file(stub: OpenAIStub, tmp_path: Path) -> None:
    shared = tmp_path / "data" / "quorum.db"
    env = quorum_env(stub, tmp_path) | {"QUORUM_DATABASE": str(shared)}
    processes, outcomes = run_workers(
        DRIVER, [[f"w{worker}", str(RUNS_EACH)] for worker in range(8)], env, tmp_path, 400
    )

    for process, (out, err) in zip(processes, outcomes, strict=True):
        assert process.returncode == 0, err
        assert "database is locked" not in err
        assert "Traceback" not in err
        assert out.strip().splitlines()[-1] == "exit codes" + " 0" * RUNS_EACH, err
    listed = quorum_process("threads", "--json", env=env, cwd=tmp_path)
    out, err = listed.communicate(timeout=120)
    threads = json.loads(out)
    assert len(threads) == 8 * RUNS_EACH
    assert {t["status"] for t in threads} == {"completed"}
    assert {t["thread_id"] for t in threads} == {
        f"w{w}-{r}" for w in range(8) for r in range(RUNS_EACH)
    }
    assert len(stub.chat_requests()) == 2 * 8 * RUNS_EACH  # two model calls a run, none repeated
    with sqlite3.connect(shared) as conn:
        forks = conn.execute(
            "SELECT thread_id, parent_checkpoint_id FROM checkpoints WHERE checkpoint_ns = '' "
            "GROUP BY thread_id, parent_checkpoint_id HAVING COUNT(*) > 1"
        ).fetchall()
    assert forks == []


COMPETING = """
import sys
from quorum.cli import app

ran = []
for thread in sys.argv[1:]:
    try:
        app(["run", "react", "What is 6 times 7?", "--thread", thread])
    except SystemExit as stop:
        if not stop.code:
            ran.append(thread)
        elif stop.code not in (2, 3):  # the thread exists already, or another run holds it
            raise
print("ran", *ran)
"""
"""One worker process trying to run every thread it is given, one after another."""


@pytest.mark.slow
def test_four_workers_competing_for_48_threads_run_each_once(
    target: str, stub: OpenAIStub, tmp_path: Path
) -> None:
    env = quorum_env(stub, tmp_path) | {"QUORUM_DATABASE": target}
    threads = [f"t{k}" for k in range(COMPETED)]
    # Every worker is offered every thread, each starting at a different place.
    step = COMPETED // 4
    orders = [threads[step * worker :] + threads[: step * worker] for worker in range(4)]
    processes, outcomes = run_workers(COMPETING, orders, env, tmp_path, 600)

    ran: list[str] = []
    for process, (out, err) in zip(processes, outcomes, strict=True):
        assert process.returncode == 0, err[-3000:]
        assert "Traceback" not in err
        ran += out.strip().splitlines()[-1].split()[1:]
    assert sorted(ran) == sorted(threads)  # every thread run, by exactly one worker
    # Counted at the server: two model calls a run, none lost, none repeated.
    assert len(stub.chat_requests()) == 2 * COMPETED
    # Counted in the database: one unforked chain a thread, every thread completed.
    completed = [t for t in threads if checkpoint_parents(target, t)]
    assert completed == threads
    for thread in threads:
        assert_one_chain(checkpoint_parents(target, thread))
    listed = quorum_process("threads", "--json", env=env, cwd=tmp_path)
    out, err = listed.communicate(timeout=120)
    assert sorted((t["thread_id"], t["status"]) for t in json.loads(out)) == sorted(
        (t, "completed") for t in threads
    ), err


def journal_runs(target: str, thread: str) -> list[str]:
    """The run named in each of `thread`'s call journal records, read from the store table."""
    query = "SELECT value FROM store WHERE prefix = %s"
    prefix = f"quorum_journal.{thread}"
    if target.startswith("postgresql://"):
        with psycopg.connect(target) as conn:
            values = [row[0] for row in conn.execute(query, (prefix,)).fetchall()]
    else:
        with sqlite3.connect(target) as conn:
            rows = conn.execute(query.replace("%s", "?"), (prefix,)).fetchall()
            values = [json.loads(row[0]) for row in rows]
    return [value["run"] for value in values]


def test_a_run_that_stalled_past_its_lease_writes_nothing_once_it_wakes(
    target: str, stub: OpenAIStub, tmp_path: Path
) -> None:
    """A holder frozen (SIGSTOP) past its lease loses the thread to a resume; woken with its
    reply in hand, it records nothing in the thread's journal and stops, exit 3."""
    env = quorum_env(stub, tmp_path) | {"QUORUM_DATABASE": target, "QUORUM_LEASE_SECONDS": "1.5"}
    stalled = stub.hold(lambda body: True)  # the stalled run's first request
    run = quorum_process(
        "run", "react", "What is 6 times 7?", "--thread", "s1", env=env, cwd=tmp_path
    )
    try:
        assert stalled.arrived.wait(60)
        os.kill(run.pid, signal.SIGSTOP)
        time.sleep(2.5)  # past its lease
        resumed = forks.run(["resume", "s1"], env=env, cwd=tmp_path, timeout=120)
        assert resumed.returncode == 0, resumed.stderr
        served = len(stub.chat_requests())
        stalled.release()  # its reply reaches the stalled process's socket
        time.sleep(0.5)
        os.kill(run.pid, signal.SIGCONT)
        _, err = run.communicate(timeout=60)
    finally:
        reap([run])

    assert run.returncode == 3, err
    assert "was taken over by another run" in err
    runs = journal_runs(target, "s1")
    # Every reply in the journal is the resume's: the stalled run's one never landed.
    assert len(set(runs)) == 1 and len(runs) == served - 1, runs
    shown = forks.run(["show", "s1", "--json"], env=env, cwd=tmp_path, timeout=60)
    assert json.loads(shown.stdout)["status"] == "completed"


async def test_a_fenced_write_lands_only_for_the_lease_holder(target: str) -> None:
    """The store checks the lease in the write's own transaction: the holder's write lands, a
    former holder's is refused with `LeaseLost`, and a thread no one holds takes none."""
    from quorum import journal
    from quorum.checkpoints import open_persistence
    from quorum.checkpoints.lease import new_holder
    from quorum.errors import LeaseLost

    async with open_persistence(target) as kept:
        namespace = journal.thread_namespace(journal.NAMESPACE, "f.1")
        first, second = new_holder(), new_holder()
        assert await kept.leases.acquire("f.1", first, 0.01) is None
        await asyncio.sleep(0.05)  # the first holder's lease expires
        assert await kept.leases.acquire("f.1", second, 30) is None

        with pytest.raises(LeaseLost, match="taken over"):
            await journal.put(kept.store, namespace, "k1", {"v": 1}, "f.1", first)
        await journal.put(kept.store, namespace, "k2", {"v": 2}, "f.1", second)
        await kept.leases.release("f.1", second)
        with pytest.raises(LeaseLost):
            await journal.put(kept.store, namespace, "k3", {"v": 3}, "f.1", second)

        kept_keys = [item.key for item in await kept.store.asearch(namespace)]
        assert kept_keys == ["k2"]


async def test_a_lease_is_taken_when_free_refused_when_live_taken_from_the_dead(
    target: str,
) -> None:
    """Taking a lease: one statement on a free thread; a live holder's lease stops it and is
    named; a holder whose process is gone loses it at once."""
    await lease_cases(target)


async def test_leases_hold_where_sqlite_has_no_returning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before SQLite 3.35 (RHEL 8 has 3.26) there is no RETURNING: the row is read back."""
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 26, 0))
    await lease_cases(str(tmp_path / "quorum.db"))


async def lease_cases(target: str) -> None:
    """A free thread, a live holder, a dead holder, each taken or refused as it should be."""
    from quorum.checkpoints import open_persistence
    from quorum.checkpoints.lease import new_holder

    with subprocess.Popen(["true"]) as gone:
        gone.wait()
    dead = f"{socket.gethostname()}:{gone.pid}:0000dead"

    async with open_persistence(target) as kept:
        first, second, third = new_holder(), new_holder(), new_holder()
        assert await kept.leases.acquire("l.1", first, 30) is None
        stopped = await kept.leases.acquire("l.1", second, 30)
        assert stopped is not None and stopped.holder == first
        held = await kept.leases.get("l.1")
        assert held is not None and held.holder == first

        # A lease whose holder's process is gone, though not yet expired, is taken over.
        await kept.leases.release("l.1", first)
        assert await kept.leases.acquire("l.1", dead, 30) is None
        assert await kept.leases.acquire("l.1", third, 30) is None
        held = await kept.leases.get("l.1")
        assert held is not None and held.holder == third
