"""Side effects happen at most once: a ReAct agent's `write_file`, counted on disk.

The CLI runs in its own process against the scripted OpenAI-compatible stub, with
irreversible tools enabled; the agent writes one file, then answers. The test does not ask
Quorum what it wrote: the kernel does (inotify on the workspace: every unnamed temporary
file opened for a write, every rename onto the target), the file on disk does, and so do
the effect ledger's rows in the SQLite file. The process is SIGKILLed at the two moments
that matter (right after the rename, and while the content is being written), the model
call after the tool fails, and the workspace runs out of space.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage

import quorum
from quorum.errors import RunFailed
from quorum.settings import get_settings
from quorum.testing import Script
from quorum.testing.stub import OpenAIStub, Reply, quorum_env, text_of
from quorum.tools import contract, files
from tests.test_crash import quorum as quorum_process
from tests.tools.inotify import Watch

IN_MODIFY = 0x002
IN_CLOSE_WRITE = 0x008
IN_OPEN = 0x020
IN_MOVED_TO = 0x080
IN_CREATE = 0x100

TARGET = "report.md"
CONTENT = "# Report\n" + "The quarterly numbers are in.\n" * 20
LARGE = "# Big report\n" + "x" * 600_000  # a write that takes milliseconds, not microseconds
CALL_ID = "call_write_1"


def writes(content: str) -> Callable[[dict], Reply | str]:
    """The agent: one write_file call, then an answer quoting the tool's result."""

    def respond(body: dict) -> Reply | str:
        results = [m for m in body["messages"] if m.get("role") == "tool"]
        if not results:
            args = {"path": TARGET, "content": content, "overwrite": True}
            return Reply(tool_calls=[{"name": "write_file", "args": args, "id": CALL_ID}])
        return f"Done. The tool said: {text_of(results[-1])[:300]}"

    return respond


def after_tool(body: dict) -> bool:
    """The agent's turn that reads the tool's result."""
    return any(m.get("role") == "tool" for m in body["messages"])


class Workspace:
    """The workspace folder and everything the kernel saw happen in it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seen: list[tuple[str, int]] = []
        self._watch = Watch([folder])

    def poll(self) -> list[tuple[str, int]]:
        new = [(path.name, mask) for path, mask in self._watch.events()]
        self.seen += new
        return new

    def kill_when(
        self, process: subprocess.Popen[str], happened: Callable[[str, int], bool]
    ) -> None:
        """SIGKILL `process` the moment an event `happened` accepts arrives."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(happened(name, mask) for name, mask in self.poll()):
                os.kill(process.pid, signal.SIGKILL)
                return
            if process.poll() is not None:
                pytest.fail(f"the run ended before the kill point: {process.communicate()}")
            time.sleep(0.0002)
        pytest.fail("the kill point never came")

    def forget(self) -> None:
        """Drop every event seen so far (a trial that is run again starts counting anew)."""
        self.poll()
        self.seen.clear()

    def count(self, mask: int, named: Callable[[str], bool]) -> int:
        self.poll()
        return sum(1 for name, seen in self.seen if seen & mask and named(name))

    def renames_onto_target(self) -> int:
        return self.count(IN_MOVED_TO, lambda name: name == TARGET)

    def temporaries_created(self) -> int:
        """Writes begun: each opens an unnamed (O_TMPFILE) file, which inotify calls #inode."""
        return self.count(IN_OPEN, is_unnamed)

    def leftovers(self) -> list[str]:
        return sorted(name for name in os.listdir(self.folder) if name != TARGET)

    def close(self) -> None:
        self._watch.close()


def is_unnamed(name: str) -> bool:
    return name.startswith("#")


def ledger(database: Path, thread: str) -> list[dict]:
    """The effect ledger's rows for `thread`, read from the SQLite file itself."""
    with sqlite3.connect(database) as conn:
        rows = conn.execute(
            "SELECT value FROM store WHERE prefix = ?", (f"quorum_effects.{thread}",)
        ).fetchall()
    return [json.loads(value) for (value,) in rows]


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as running:
        yield running


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    folder = tmp_path / "workspace"
    folder.mkdir()
    watched = Workspace(folder)
    try:
        yield watched
    finally:
        watched.close()


@pytest.fixture
def env(stub: OpenAIStub, tmp_path: Path) -> dict[str, str]:
    return quorum_env(stub, tmp_path) | {
        "QUORUM_APPROVE_TOOLS": "write_file",
        "QUORUM_WORKSPACE_DIR": str(tmp_path / "workspace"),
        "QUORUM_MAX_ATTEMPTS": "3",
        "QUORUM_RETRY_WAIT": "0.05",
    }


def cli(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    process = quorum_process(*args, env=env, cwd=cwd)
    try:
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
        process.communicate()
    return process.returncode, out, err


def status_of(thread: str, env: dict[str, str], cwd: Path) -> dict:
    code, out, err = cli("threads", "--json", env=env, cwd=cwd)
    assert code == 0, err
    return next(t for t in json.loads(out) if t["thread_id"] == thread)


def run_until(
    thread: str,
    at: Callable[[str, int], bool],
    *,
    env: dict[str, str],
    cwd: Path,
    workspace: Workspace,
) -> int:
    """Run the agent on `thread`, SIGKILLed when the kernel reports `at`; its exit code."""
    run = quorum_process("run", "react", "Write the report", "--thread", thread, env=env, cwd=cwd)
    try:
        workspace.kill_when(run, at)
    finally:
        run.kill()
        run.communicate()
    return run.returncode


@pytest.mark.slow
def test_kill_right_after_the_rename_never_writes_twice(
    stub: OpenAIStub, env: dict[str, str], tmp_path: Path, workspace: Workspace
) -> None:
    stub.responder = writes(CONTENT)
    database = tmp_path / "data" / "quorum.db"

    # +0 ms: killed as soon as the kernel reports the file renamed into place.
    renamed = run_until(
        "a1", lambda name, mask: name == TARGET and bool(mask & IN_MOVED_TO),
        env=env, cwd=tmp_path, workspace=workspace,
    )  # fmt: skip
    assert renamed == -signal.SIGKILL

    assert (workspace.folder / TARGET).read_text() == CONTENT
    (recorded,) = ledger(database, "a1")

    code, out, err = cli("resume", "a1", env=env, cwd=tmp_path)

    if recorded["state"] == "completed":
        # The outcome reached the ledger before the kill landed (a loaded machine can delay
        # the killer by milliseconds): the recorded result is replayed, nothing is written.
        assert code == 0, err
        assert '"created":true' in out
    else:
        # The write happened but its outcome never reached the ledger: it is neither redone
        # silently nor taken for done; the thread waits for a person.
        assert (recorded["state"], recorded["tool"]) == ("started", "write_file")
        assert code == 5, err
        assert "needs a decision: write_file started but its outcome was never recorded" in err
        assert status_of("a1", env, tmp_path)["status"] == "needs_reconciliation"
        assert workspace.renames_onto_target() == 1

        code, out, err = cli("resolve", "a1", "done", env=env, cwd=tmp_path)

        assert code == 0, err
        assert "took effect (confirmed by an operator" in out
    assert "status completed" in err
    assert workspace.renames_onto_target() == 1
    assert workspace.temporaries_created() == 1
    assert (workspace.folder / TARGET).read_text() == CONTENT
    assert workspace.leftovers() == []
    assert [e["state"] for e in ledger(database, "a1")] == ["completed"]
    # The first turn (which asked for the write) was requested once over all three processes.
    assert sum(1 for b in stub.chat_bodies() if not after_tool(b)) == 1


def killed_while_writing(*, env: dict[str, str], cwd: Path, workspace: Workspace) -> str:
    """A run SIGKILLed while the content goes into the (unnamed) temporary file: its thread.

    The kill follows the kernel's first write event into the file; the rest of the write,
    its fsync and the rename take milliseconds, and on a loaded machine the killer has
    landed after them, or after the run's end (CI, 2026-12-07). Such a run tested nothing
    here: its file is removed, what the kernel saw of it forgotten, and a new run is
    killed, up to three.
    """
    for attempt in range(1, 4):
        thread = f"b{attempt}"
        code = run_until(
            thread, lambda name, mask: is_unnamed(name) and bool(mask & IN_MODIFY),
            env=env, cwd=cwd, workspace=workspace,
        )  # fmt: skip
        if not (workspace.folder / TARGET).exists():
            assert code == -signal.SIGKILL
            return thread
        (workspace.folder / TARGET).unlink()
        workspace.forget()
    pytest.fail("three runs each finished their write before the kill landed")


@pytest.mark.parametrize("decision", ["retry", "done"])
@pytest.mark.slow
def test_kill_while_writing_needs_a_decision(
    decision: str, stub: OpenAIStub, env: dict[str, str], tmp_path: Path, workspace: Workspace
) -> None:
    stub.responder = writes(LARGE)
    database = tmp_path / "data" / "quorum.db"

    thread = killed_while_writing(env=env, cwd=tmp_path, workspace=workspace)

    assert not (workspace.folder / TARGET).exists()
    assert workspace.renames_onto_target() == 0
    assert [e["state"] for e in ledger(database, thread)] == ["started"]
    code, _, err = cli("resume", thread, env=env, cwd=tmp_path)
    assert code == 5, err
    assert "needs a decision: write_file started but its outcome was never recorded" in err
    assert f"`quorum resolve {thread} done`" in err
    listed = status_of(thread, env, tmp_path)
    assert listed["status"] == "needs_reconciliation"
    assert [(w["type"], w["tool"], w["args"]["path"]) for w in listed["waiting"]] == [
        ("needs_reconciliation", "write_file", TARGET)
    ]
    code, out, err = cli("show", thread, env=env, cwd=tmp_path)
    assert code == 0, err
    assert f"react thread {thread}: needs_reconciliation" in out
    assert "write_file started but its outcome was never recorded" in err
    assert listed["waiting"][0]["idempotency_key"] in err
    assert workspace.temporaries_created() == 1  # resuming, listing, showing wrote nothing

    code, out, err = cli("resolve", thread, decision, env=env, cwd=tmp_path)

    assert code == 0, err
    assert "status completed" in err
    assert status_of(thread, env, tmp_path)["status"] == "completed"
    if decision == "retry":
        assert workspace.renames_onto_target() == 1
        assert workspace.temporaries_created() == 2  # the killed attempt, and the retry
        assert (workspace.folder / TARGET).read_text() == LARGE
        assert '"chars":600013' in out
    else:
        assert workspace.renames_onto_target() == 0
        assert workspace.temporaries_created() == 1
        assert not (workspace.folder / TARGET).exists()
        assert "took effect (confirmed by an operator" in out
    assert [e["state"] for e in ledger(database, thread)] == ["completed"]
    # No half-written temporary file may stay behind in the workspace, where list_files
    # would show it to every agent.
    left = workspace.leftovers()
    assert left == [], {name: (workspace.folder / name).stat().st_size for name in left}


@pytest.mark.parametrize(
    ("status", "times", "requests_failing"),
    [(500, 3, 3), (400, 1, 1)],
    ids=["500-beyond-max-attempts", "400"],
)
@pytest.mark.slow
def test_failure_after_the_effect_resumes_without_writing_again(
    status: int,
    times: int,
    requests_failing: int,
    stub: OpenAIStub,
    env: dict[str, str],
    tmp_path: Path,
    workspace: Workspace,
) -> None:
    stub.responder = writes(CONTENT)
    stub.fail(status, times=times, when=after_tool)

    code, _, err = cli("run", "react", "Write the report", "--thread", "c1", env=env, cwd=tmp_path)

    assert code == 1
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("error: react run c1 stopped: agent 'agent' failed:")
    ), err
    assert workspace.renames_onto_target() == 1
    assert [r.status for r in stub.chat_requests()] == [200] + [status] * requests_failing
    assert status_of("c1", env, tmp_path)["status"] == "failed"

    code, out, err = cli("resume", "c1", env=env, cwd=tmp_path)

    assert code == 0, err
    assert "status completed" in err
    assert '"created":true' in out  # the agent saw the first (and only) write's result
    assert workspace.renames_onto_target() == 1
    assert workspace.temporaries_created() == 1
    assert (workspace.folder / TARGET).read_text() == CONTENT
    assert workspace.leftovers() == []
    assert [r.status for r in stub.chat_requests()] == [200] + [status] * requests_failing + [200]


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs as the workspace."""
    folder = tmp_path / "workspace"
    folder.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.mark.slow
def test_full_disk_is_a_clear_tool_error_and_leaves_no_part(
    full_disk: Path, stub: OpenAIStub, env: dict[str, str], tmp_path: Path
) -> None:
    watched = Workspace(full_disk)
    try:
        stub.responder = writes("y" * 200_000)  # three times what the disk holds

        code, out, err = cli(
            "run", "react", "Write the report", "--thread", "d1", env=env, cwd=tmp_path
        )

        assert code == 0, err
        assert "status completed" in err
        assert watched.temporaries_created() == 1
        # Nothing was ever given a name: no temporary file, no target.
        assert watched.count(IN_CREATE | IN_MOVED_TO, lambda name: True) == 0
        assert os.listdir(full_disk) == []
    finally:
        watched.close()
    seen = [m for m in stub.chat_bodies()[1]["messages"] if m["role"] == "tool"]
    failure = json.loads(text_of(seen[0]))
    assert failure == {
        "error": f"cannot write '{TARGET}': the disk is full; nothing was written",
        "retryable": False,
        "suggestion": "tell the user the workspace is out of space; write less",
    }
    assert "the disk is full" in out
    assert len(stub.chat_bodies()) == 2


@pytest.mark.parametrize("overwrite", [True, False], ids=["completed", "failed"])
async def test_ledger_returns_the_recorded_outcome_without_running_again(
    overwrite: bool,
    script: Script,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    db: str,
) -> None:
    monkeypatch.setenv("QUORUM_APPROVE_TOOLS", "write_file")
    monkeypatch.setenv("QUORUM_WORKSPACE_DIR", str(tmp_path / "workspace"))
    get_settings.cache_clear()
    (tmp_path / "workspace").mkdir()
    (tmp_path / "workspace" / TARGET).write_text("old")
    ran: list[str] = []
    real_write = files._write

    def counting_write(*args):
        ran.append(args[1])
        return real_write(*args)

    monkeypatch.setattr(files, "_write", counting_write)
    # The tool step fails after the ledger recorded the outcome, before the step's own
    # checkpoint: the step runs again on resume, and meets the ledger.
    real_message = contract._message
    crashes = iter([RuntimeError("the step died after the effect")])

    def message_then_crash(*args, **kwargs):
        if error := next(crashes, None):
            raise error
        return real_message(*args, **kwargs)

    monkeypatch.setattr(contract, "_message", message_then_crash)
    tool_results: list[str] = []

    def agent(name, messages):
        results = [m for m in messages if m.type == "tool"]
        if results:
            tool_results.append(results[-1].text)
            return "done"
        args = {"path": TARGET, "content": "new", "overwrite": overwrite}
        return AIMessage("", tool_calls=[{"name": "write_file", "args": args, "id": CALL_ID}])

    script.on("agent", agent)

    with pytest.raises(RunFailed, match="agent 'tool' failed"):
        await quorum.run("react", "Write it", thread_id="u1", database=db)
    assert ran == [TARGET]
    (recorded,) = ledger(Path(db), "u1")
    assert recorded["state"] == ("completed" if overwrite else "failed")

    resumed = await quorum.resume("u1", database=db)

    assert resumed.status == "completed"
    assert ran == [TARGET]  # the tool did not run again
    assert tool_results == [recorded["content"]]
    assert (tmp_path / "workspace" / TARGET).read_text() == ("new" if overwrite else "old")
    assert script.count("agent") == 2
