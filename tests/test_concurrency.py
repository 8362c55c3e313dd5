"""Many processes, one thread or one database: one run per thread, no forks, no lock errors.

Everything runs as real `quorum` processes against the scripted OpenAI-compatible stub; what
is checked is read from outside them: exit codes and stderr, requests at the stub, and the
checkpoint rows in the database (SQLite, and PostgreSQL started by `.ci/postgres`).
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.openai_stub import OpenAIStub
from tests.test_crash import quorum as quorum_process
from tests.test_crash import quorum_env
from tests.test_postgres import database, server_url  # noqa: F401  (fixtures)


def after_tool(body: dict) -> bool:
    """The agent's second call: it has the calculator's result."""
    return any(m.get("role") == "tool" for m in body["messages"])


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as running:
        yield running


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The checkpoint database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "data" / "quorum.db")
    return request.getfixturevalue("database")


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


def reap(processes: list[subprocess.Popen[str]]) -> None:
    for process in processes:
        process.kill()
        process.communicate()


def run_workers(
    script: str, argvs: list[list[str]], env: dict[str, str], cwd: Path, timeout: float
) -> tuple[list[subprocess.Popen[str]], list[tuple[str, str]]]:
    """Run `script` in one process per argument list, all at once; their (stdout, stderr)."""
    processes: list[subprocess.Popen[str]] = []
    try:
        for argv in argvs:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-c", script, *argv],
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


@pytest.mark.slow
def test_eight_processes_of_25_runs_share_one_sqlite_file(stub: OpenAIStub, tmp_path: Path) -> None:
    shared = tmp_path / "data" / "quorum.db"
    env = quorum_env(stub, tmp_path) | {"QUORUM_DATABASE": str(shared)}
    processes, outcomes = run_workers(
        DRIVER, [[f"w{worker}", "25"] for worker in range(8)], env, tmp_path, 400
    )

    for process, (out, err) in zip(processes, outcomes, strict=True):
        assert process.returncode == 0, err
        assert "database is locked" not in err
        assert "Traceback" not in err
        assert out.strip().splitlines()[-1] == "exit codes" + " 0" * 25, err
    listed = quorum_process("threads", "--json", env=env, cwd=tmp_path)
    out, err = listed.communicate(timeout=120)
    threads = json.loads(out)
    assert len(threads) == 200
    assert {t["status"] for t in threads} == {"completed"}
    assert {t["thread_id"] for t in threads} == {f"w{w}-{r}" for w in range(8) for r in range(25)}
    assert len(stub.chat_requests()) == 400  # two model calls a run, none repeated
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
def test_four_workers_competing_for_100_threads_run_each_once(
    target: str, stub: OpenAIStub, tmp_path: Path
) -> None:
    env = quorum_env(stub, tmp_path) | {"QUORUM_DATABASE": target}
    threads = [f"t{k}" for k in range(100)]
    # Every worker is offered every thread, each starting at a different place.
    orders = [threads[25 * worker :] + threads[: 25 * worker] for worker in range(4)]
    processes, outcomes = run_workers(COMPETING, orders, env, tmp_path, 600)

    ran: list[str] = []
    for process, (out, err) in zip(processes, outcomes, strict=True):
        assert process.returncode == 0, err[-3000:]
        assert "Traceback" not in err
        ran += out.strip().splitlines()[-1].split()[1:]
    assert sorted(ran) == sorted(threads)  # every thread run, by exactly one worker
    # Counted at the server: two model calls a run, none lost, none repeated.
    assert len(stub.chat_requests()) == 200
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
