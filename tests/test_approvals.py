"""Approvals from outside: an irreversible tool runs only once a person says so, and once.

The agents ask the scripted OpenAI-compatible stub on loopback, which makes them call
`write_file`. What the tool did is counted on disk, with inotify on the workspace folder:
each run of the tool creates one temporary `.NAME.*.partial` file and renames it over NAME
(the calls ask to overwrite, so a second run would really write again). A person answers
through every way in: the CLI in a pseudo-terminal (its prompt) and `quorum approve`, the
Python API, and `langgraph dev` over HTTP with langgraph-sdk. Processes are killed with
SIGKILL while the question waits and right after an approved write.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langgraph_sdk import get_client

import quorum
from quorum.effects import Decision
from quorum.errors import UsageError
from quorum.settings import get_settings
from quorum.testing import Script, forks
from quorum.testing.langgraph_dev import RUN_TIMEOUT, langgraph_dev, stub_settings
from quorum.testing.stub import OpenAIStub, Reply, text_of
from tests.test_budgets import CLI_TIMEOUT, cli, env_for, show
from tests.test_crash import agent_of
from tests.tools.inotify import Watch

Json = dict[str, Any]

IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
PROMPT = "approve, reject or edit?"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as running:
        yield running


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    folder = tmp_path / "workspace"
    folder.mkdir()
    return folder


class Disk:
    """What happened to files in the workspace, seen by the kernel (inotify)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.watch = Watch([folder])
        self.seen: list[tuple[Path, int]] = []

    def runs(self, name: str) -> int:
        """How many times the tool set out to write `name` (its temporary files)."""
        self.seen += self.watch.events()
        pattern = re.compile(rf"^\.{re.escape(name)}\.[0-9a-f]+\.partial$")
        return sum(1 for path, mask in self.seen if mask & IN_CREATE and pattern.match(path.name))

    def writes(self, name: str) -> int:
        """How many times `name` was put in place."""
        self.seen += self.watch.events()
        return sum(
            1 for path, mask in self.seen if path.name == name and mask & (IN_MOVED_TO | IN_CREATE)
        )

    def count(self, name: str) -> tuple[int, int]:
        """(runs, writes) of `name`."""
        return self.runs(name), self.writes(name)


@pytest.fixture
def disk(workspace: Path) -> Iterator[Disk]:
    watched = Disk(workspace)
    try:
        yield watched
    finally:
        watched.watch.close()


def tool_results(body: Json) -> list[Json]:
    return [m for m in body.get("messages", []) if m.get("role") == "tool"]


def write_call(path: str, call_id: str) -> Reply:
    args = {"path": path, "content": f"saved by {call_id}", "overwrite": True}
    return Reply(tool_calls=[{"id": call_id, "name": "write_file", "args": args}])


def saving(path: str, call_id: str = "call_save") -> Any:
    """A responder: write `path` once, then answer from the tool's result (the default)."""

    def respond(body: Json) -> Reply | None:
        return None if tool_results(body) else write_call(path, call_id)

    return respond


def told(stub: OpenAIStub, text: str) -> bool:
    """Whether any request to the model carried a tool result containing `text`."""
    return any(text in text_of(m) for body in stub.chat_bodies() for m in tool_results(body))


class Terminal:
    """`quorum ARGS` with stdin, stdout and stderr on a pseudo-terminal, as a person runs it."""

    def __init__(self, *args: str, env: dict[str, str], cwd: Path) -> None:
        self.master, slave = os.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "quorum.cli", *args],
            env=env | {"TERM": "dumb", "COLUMNS": "200"},
            cwd=cwd,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,  # no signal from the test's own terminal reaches it
        )
        os.close(slave)
        self.transcript = ""
        self._read_to = 0

    def read_until(self, text: str, timeout: float = CLI_TIMEOUT) -> bool:
        """Read the screen until `text` appears after what was read before; False at exit."""
        deadline = time.monotonic() + timeout
        while (found := self.transcript.find(text, self._read_to)) < 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} did not appear in time:\n{self.transcript}")
            if not self._read():
                return False
        self._read_to = found + len(text)
        return True

    def _read(self) -> bool:
        """Add what the screen shows next to the transcript; False once nobody writes to it."""
        ready, _, _ = select.select([self.master], [], [], 0.2)
        if not ready:
            return True
        try:
            data = os.read(self.master, 4096)
        except OSError:  # EIO: every process holding the terminal has gone
            return False
        self.transcript += ANSI.sub("", data.decode("utf-8", "replace")).replace("\r", "")
        return bool(data)

    def type(self, line: str) -> None:
        """Type `line` and press Enter."""
        os.write(self.master, f"{line}\r".encode())

    def finish(self) -> int:
        """Read to the end and return the exit code."""
        deadline = time.monotonic() + CLI_TIMEOUT
        while self._read() and time.monotonic() < deadline:
            pass
        return self.process.wait(timeout=CLI_TIMEOUT)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        os.close(self.master)


@pytest.mark.slow
def test_cli_runs_an_approved_call_once_and_a_rejected_one_never(
    stub: OpenAIStub, tmp_path: Path, disk: Disk
) -> None:
    env = env_for(stub, tmp_path)
    stub.responder = saving("note.md")

    waiting = cli("run", "react", "Save a note", "--thread", "t1", env=env, cwd=tmp_path)

    assert waiting.returncode == 5, waiting.stderr
    assert "quorum approve t1" in waiting.stderr
    thread = show("t1", env=env, cwd=tmp_path)
    assert thread["status"] == "waiting_approval"
    [asked] = thread["waiting"]
    assert (asked["type"], asked["tool"], asked["agent"], asked["call_id"]) == (
        "approval", "write_file", "agent", "call_save",
    )  # fmt: skip
    assert asked["args"] == {"path": "note.md", "content": "saved by call_save", "overwrite": True}
    assert disk.count("note.md") == (0, 0)

    # Approved; the process dies while the model is asked about the written file.
    after_write = stub.hold(lambda body: bool(tool_results(body)))
    approving = forks.start(
        ["approve", "t1"],
        env=env, cwd=tmp_path, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert after_write.arrived.wait(CLI_TIMEOUT)
        approving.send_signal(signal.SIGKILL)
    finally:
        approving.kill()
        approving.wait(timeout=30)
    assert disk.count("note.md") == (1, 1)

    resumed = cli("resume", "t1", env=env, cwd=tmp_path)

    # Nobody is asked again, and the file is not written again.
    assert resumed.returncode == 0, resumed.stderr
    assert "status completed" in resumed.stderr
    again = cli("approve", "t1", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert disk.count("note.md") == (1, 1)
    assert (disk.folder / "note.md").read_text() == "saved by call_save"
    assert told(stub, '"chars":18')  # the agent read the write's result

    stub.responder = saving("other.md", "call_other")
    waiting = cli("run", "react", "Save another note", "--thread", "t2", env=env, cwd=tmp_path)
    assert waiting.returncode == 5, waiting.stderr

    rejected = cli("approve", "t2", "--reject", "--reason", "not today", env=env, cwd=tmp_path)

    assert rejected.returncode == 0, rejected.stderr
    assert "status completed" in rejected.stderr
    assert disk.count("other.md") == (0, 0)
    assert not (disk.folder / "other.md").exists()
    assert told(stub, "a person rejected this call of write_file: not today")

    # Each decision names who made it at which terminal, in show and in the report.
    me = f"{getpass.getuser()}@{socket.gethostname()}"
    for thread, action in (("t1", "approve"), ("t2", "reject")):
        [decision] = show(thread, env=env, cwd=tmp_path)["decisions"]
        assert (decision["tool"], decision["action"]) == ("write_file", action)
        assert (decision["by"], decision["via"]) == (me, "cli")
    shown = cli("show", "t2", env=env, cwd=tmp_path)
    assert f"write_file (agent 'agent') rejected by {me} via cli at " in shown.stdout
    page = tmp_path / "t1.html"
    reported = cli("report", "t1", "--output", str(page), env=env, cwd=tmp_path)
    assert reported.returncode == 0, reported.stderr
    assert f"approved by {me} via cli" in page.read_text()


@pytest.mark.slow
def test_terminal_approval_runs_the_call_once(stub: OpenAIStub, tmp_path: Path, disk: Disk) -> None:
    env = env_for(stub, tmp_path)
    stub.responder = saving("note.md")
    terminal = Terminal("run", "react", "Save a note", "--thread", "p0", env=env, cwd=tmp_path)
    try:
        assert terminal.read_until("wants to run write_file")
        assert terminal.read_until(PROMPT)
        assert disk.count("note.md") == (0, 0)
        terminal.type("a")
        code = terminal.finish()
    finally:
        terminal.close()

    assert code == 0, terminal.transcript
    assert "status completed" in terminal.transcript
    assert "The tool says:" in terminal.transcript  # the answer, on stdout
    assert disk.count("note.md") == (1, 1)
    assert (disk.folder / "note.md").read_text() == "saved by call_save"


@pytest.mark.slow
def test_terminal_asks_again_after_a_kill_and_runs_the_call_once(
    stub: OpenAIStub, tmp_path: Path, disk: Disk
) -> None:
    env = env_for(stub, tmp_path)
    stub.responder = saving("note.md")
    first = Terminal("run", "react", "Save a note", "--thread", "p1", env=env, cwd=tmp_path)
    try:
        assert first.read_until("wants to run write_file")
        assert first.read_until(PROMPT)
        first.process.send_signal(signal.SIGKILL)
        assert first.process.wait(timeout=30) == -signal.SIGKILL
    finally:
        first.close()
    assert disk.count("note.md") == (0, 0)
    thread = show("p1", env=env, cwd=tmp_path)
    assert thread["status"] == "waiting_approval"
    assert [w["call_id"] for w in thread["waiting"]] == ["call_save"]

    # `quorum resume` in a terminal asks the question once more.
    second = Terminal("resume", "p1", env=env, cwd=tmp_path)
    try:
        asked = second.read_until(PROMPT)
        if asked:
            second.type("a")
        code = second.finish()
    finally:
        second.close()
    if not asked:  # approve it anyway, so the rest is checked (the failure is reported below)
        assert cli("approve", "p1", env=env, cwd=tmp_path).returncode == 0

    assert disk.count("note.md") == (1, 1)
    assert show("p1", env=env, cwd=tmp_path)["status"] == "completed"
    assert asked and code == 0, f"exit {code}: {second.transcript}"


@pytest.mark.slow
def test_terminal_rejection_with_a_reason_runs_nothing(
    stub: OpenAIStub, tmp_path: Path, disk: Disk
) -> None:
    env = env_for(stub, tmp_path)
    stub.responder = saving("note.md")
    terminal = Terminal("run", "react", "Save a note", "--thread", "p2", env=env, cwd=tmp_path)
    try:
        assert terminal.read_until(PROMPT)
        terminal.type("r")
        assert terminal.read_until("reason (the agent reads it)")
        terminal.type("too risky")
        code = terminal.finish()
    finally:
        terminal.close()

    assert code == 0, terminal.transcript
    assert "status completed" in terminal.transcript
    assert disk.count("note.md") == (0, 0)
    assert told(stub, "a person rejected this call of write_file: too risky")


PARALLEL_PLAN = {
    "steps": [
        {"id": "s1", "worker": "researcher", "task": "Save note A.", "dependencies": []},
        {"id": "s2", "worker": "researcher", "task": "Save note B.", "dependencies": []},
        {"id": "s3", "worker": "writer", "task": "Report.", "dependencies": ["s1", "s2"]},
    ]
}


def parallel_researchers(body: Json) -> Reply | None:
    """Each researcher writes its own note, then answers from the tool's result."""
    if agent_of(body) != "researcher" or tool_results(body):
        return None
    task = next(text_of(m) for m in body["messages"] if m.get("role") == "user")
    return write_call("a.md", "call_a") if "note A" in task else write_call("b.md", "call_b")


@pytest.mark.slow
async def test_parallel_approvals_are_each_answered_by_id(
    stub: OpenAIStub,
    tmp_path: Path,
    disk: Disk,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = env_for(stub, tmp_path)
    stub.schema_replies["Plan"] = PARALLEL_PLAN
    stub.responder = parallel_researchers

    # A researcher may write only when the run grants it (least privilege).
    grant = '--set=agent_tools={"researcher": ["write_file"]}'
    waiting = cli(
        "run", "orchestrator", "Save two notes", "--thread", "o1", grant, env=env, cwd=tmp_path
    )

    assert waiting.returncode == 5, waiting.stderr
    thread = show("o1", env=env, cwd=tmp_path)
    assert thread["status"] == "waiting_approval"
    calls = {w["call_id"]: (w["agent"], w["args"]["path"]) for w in thread["waiting"]}
    assert calls == {"call_a": ("researcher", "a.md"), "call_b": ("researcher", "b.md")}
    assert disk.count("a.md") == disk.count("b.md") == (0, 0)

    approved = cli("approve", "o1", "--call", "call_a", env=env, cwd=tmp_path)

    # One answer: its call runs; the other still waits.
    assert approved.returncode == 5, approved.stderr
    thread = show("o1", env=env, cwd=tmp_path)
    assert [w["call_id"] for w in thread["waiting"]] == ["call_b"]
    assert disk.count("a.md") == (1, 1)
    assert disk.count("b.md") == (0, 0)

    # The other through the Python API, in this process.
    for name, value in env.items():
        if name.startswith("QUORUM_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("QUORUM_APPROVERS", "carol")  # from now on, only carol decides
    get_settings.cache_clear()
    reject: dict[str, Decision] = {"call_b": {"action": "reject", "reason": "one note is enough"}}
    with pytest.raises(UsageError, match="mallory may not decide approvals here"):
        await quorum.resume("o1", approve=reject, decided_by="mallory")
    assert [w["call_id"] for w in (await quorum.get_thread("o1")).waiting] == ["call_b"]
    result = await quorum.resume("o1", approve=reject, decided_by="carol")

    assert result.status == "completed"
    me = f"{getpass.getuser()}@{socket.gethostname()}"
    made = [(d["action"], d["by"], d["via"]) for d in (await quorum.get_thread("o1")).decisions]
    assert made == [("approve", me, "cli"), ("reject", "carol", "python")]
    assert disk.count("a.md") == (1, 1)
    assert disk.count("b.md") == (0, 0)
    assert (disk.folder / "a.md").read_text() == "saved by call_a"
    assert told(stub, "a person rejected this call of write_file: one note is enough")
    researchers = Counter(agent_of(b) for b in stub.chat_bodies())["researcher"]
    assert researchers == 4  # each researcher: its call, then its answer from the result

    again = await quorum.resume("o1", approve=True, decided_by="carol")
    assert again.status == "completed"
    assert disk.count("a.md") == (1, 1)
    assert disk.count("b.md") == (0, 0)


def interrupts_of(state: Json) -> list[Json]:
    """Every interrupt a thread's state shows, at the top or in its tasks."""
    found = list(state.get("interrupts") or [])
    for task in state.get("tasks") or []:
        found += task.get("interrupts") or []
    unique = {json.dumps(i, sort_keys=True, default=str): i for i in found}
    return list(unique.values())


@pytest.mark.server
async def test_langgraph_dev_waits_for_approval_and_resumes_over_http(
    stub: OpenAIStub, tmp_path: Path, disk: Disk
) -> None:
    stub.responder = saving("note.md")
    settings = stub_settings(stub.base_url, tmp_path / "data") | {
        "QUORUM_WORKSPACE_DIR": str(disk.folder),
    }
    folder = tmp_path / "server"
    folder.mkdir()
    with langgraph_dev(folder, settings) as served:
        async with get_client(url=served.url, api_key=None, timeout=RUN_TIMEOUT) as client:
            thread_id = (await client.threads.create())["thread_id"]
            run = await client.runs.create(thread_id, "react", input={"input": "Save a note"})
            await client.runs.join(thread_id, run["run_id"])
            state: Any = await client.threads.get_state(thread_id)
            [pending] = interrupts_of(state)
            assert disk.count("note.md") == (0, 0)

            run = await client.runs.create(
                thread_id, "react", command={"resume": {"action": "approve"}}
            )
            values: Any = await client.runs.join(thread_id, run["run_id"])
            finished = await client.runs.get(thread_id, run["run_id"])
            state = await client.threads.get_state(thread_id)

    assert pending["value"]["type"] == "approval", pending
    assert pending["value"]["tool"] == "write_file"
    assert pending["value"]["args"]["path"] == "note.md"
    assert finished["status"] == "success", served.log_text()
    assert values["status"] == "answered"
    assert interrupts_of(state) == []
    outcome = [m["content"] for m in values["messages"] if m["type"] == "tool"]
    assert disk.count("note.md") == (1, 1), outcome
    assert (disk.folder / "note.md").read_text() == "saved by call_save"
    # Sent through the server, with no authentication configured: nobody is named.
    [decision] = (await quorum.get_thread(thread_id, database=str(served.database))).decisions
    assert (decision["action"], decision["by"], decision["via"]) == (
        "approve",
        "anonymous",
        "server",
    )


# The CLI's `approve`, killed with SIGKILL the moment the approved file is in place: before
# the ledger records the write's outcome, as a kill at the worst instant would.
KILLED_AS_THE_FILE_LANDS = """
import os, signal, sys
rename = os.rename
def landing(src, dst, *args, **kwargs):
    rename(src, dst, *args, **kwargs)
    if str(dst) == sys.argv[1]:
        os.kill(os.getpid(), signal.SIGKILL)
os.rename = landing
from quorum.cli import app
app(sys.argv[2:])
"""


@pytest.mark.parametrize("then", ["approve", "resume"])
@pytest.mark.slow
def test_a_killed_approve_finishes_with_one_write(
    stub: OpenAIStub, tmp_path: Path, disk: Disk, then: str
) -> None:
    env = env_for(stub, tmp_path)
    stub.responder = saving("note.md")
    waiting = cli("run", "react", "Save a note", "--thread", "t1", env=env, cwd=tmp_path)
    assert waiting.returncode == 5, waiting.stderr

    killed = forks.run(
        ["note.md", "approve", "t1"], code=KILLED_AS_THE_FILE_LANDS,
        env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, timeout=CLI_TIMEOUT,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    assert disk.count("note.md") == (1, 1)
    # The approval was answered: nobody waits for it any more.
    assert show("t1", env=env, cwd=tmp_path)["status"] == "interrupted"

    # Whichever way the person goes on, the step asks what became of the write it started
    # (its outcome was never recorded) instead of taking the old approval for an answer.
    again = cli(then, "t1", env=env, cwd=tmp_path)
    assert again.returncode == 5, again.stderr
    thread = show("t1", env=env, cwd=tmp_path)
    assert thread["status"] == "needs_reconciliation"
    [asked] = thread["waiting"]
    assert (asked["type"], asked["call_id"]) == ("needs_reconciliation", "call_save")
    assert disk.count("note.md") == (1, 1)

    done = cli("resolve", "t1", "done", env=env, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert "status completed" in done.stderr
    assert disk.count("note.md") == (1, 1)  # written once, through the kill
    assert (disk.folder / "note.md").read_text() == "saved by call_save"


async def test_approve_again_after_a_stop_past_the_approved_call_goes_on(
    script: Script, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`approve` stopped after the approved call ran (a kill, Ctrl-C): the thread waits for
    no approval any more, and `approve` again goes on from the recorded decision, as resume
    would, instead of refusing; the call is not run again."""
    monkeypatch.setenv("QUORUM_WORKSPACE_DIR", str(tmp_path))
    get_settings.cache_clear()

    def agent(name: str, messages: list) -> AIMessage | str:
        if not any(isinstance(m, ToolMessage) for m in messages):
            args = {"path": "n.md", "content": "once"}
            return AIMessage("", tool_calls=[{"name": "write_file", "args": args, "id": "w1"}])
        return "saved"

    script.on("agent", agent)
    waiting = await quorum.run("react", "Save a note", thread_id="ag1")
    assert waiting.status == "waiting_approval"
    script.delay = 30.0  # the turn after the write hangs: it is stopped there
    approving = asyncio.create_task(quorum.resume("ag1", approve=True, decided_by="fay"))
    while script.count("agent") < 2:
        await asyncio.sleep(0.02)
    approving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await approving
    assert (tmp_path / "n.md").read_text() == "once"
    assert (await quorum.get_thread("ag1")).status == "interrupted"
    script.delay = 0.0

    done = await quorum.resume("ag1", approve=True, decided_by="fay")

    assert done.status == "completed" and done.output == "saved"
    assert (tmp_path / "n.md").read_text() == "once"
    [decision] = (await quorum.get_thread("ag1")).decisions
    assert (decision["by"], decision["via"]) == ("fay", "python")
