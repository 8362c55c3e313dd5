"""What a run accepts and how a thread's status is told: input from an argument, standard
input or a file (UTF-8 only, refused before anything is saved); `completed` only when the
graph reached its end; SIGTERM stops a run like Ctrl-C; the key never leaves the process."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage
from typer.testing import CliRunner

import quorum
from quorum.checkpoints import open_persistence
from quorum.cli import app
from quorum.graphs import PATTERNS
from quorum.testing import Script
from quorum.testing.stub import OpenAIStub, quorum_env

runner = CliRunner()


def quorum_cli(*args: str, stdin: bytes | None = None):
    return runner.invoke(app, list(args), input=stdin)


def thread_ids(db: str) -> list[str]:
    if not Path(db).exists():
        return []
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT DISTINCT thread_id FROM checkpoints")]


def test_input_from_standard_input(script: Script) -> None:
    result = quorum_cli("run", "react", "-", "--thread", "in1", stdin=b"What is 6*7?")

    assert result.exit_code == 0, result.output
    first = script.calls[0].messages[-1].text
    assert first == "What is 6*7?"


def test_input_from_a_file(script: Script, tmp_path: Path) -> None:
    task = tmp_path / "task.md"
    task.write_text("Ünïcode task " + "x" * 200_000)  # more than an argument may hold

    result = quorum_cli("run", "react", "--file", str(task), "--thread", "in2")

    assert result.exit_code == 0, result.output
    assert script.calls[0].messages[-1].text == task.read_text()


@pytest.mark.parametrize("where", ["stdin", "file"])
def test_invalid_utf8_is_refused_before_anything_is_saved(
    script: Script, tmp_path: Path, db: str, where: str
) -> None:
    data = b"caf\xe9 au lait"  # Latin-1, not UTF-8
    if where == "file":
        path = tmp_path / "task.txt"
        path.write_bytes(data)
        result = quorum_cli("run", "react", "--file", str(path))
    else:
        result = quorum_cli("run", "react", "-", stdin=data)

    assert result.exit_code == 2
    assert "is not valid UTF-8 (undecodable byte at position 3)" in result.output
    assert script.calls == [] and thread_ids(db) == []


@pytest.mark.slow
def test_undecodable_argument_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUORUM_")}
    env |= {"QUORUM_DATA_DIR": str(tmp_path / "data"), "LC_ALL": "C.UTF-8"}
    # The terminal passes raw bytes; Python turns the undecodable one into a lone surrogate.
    done = subprocess.run(
        [sys.executable.encode(), b"-m", b"quorum.cli", b"run", b"react", b"caf\xe9"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )

    assert done.returncode == 2, done.stderr
    assert b"is not valid UTF-8" in done.stderr
    assert not (tmp_path / "data" / "quorum.db").exists()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--thread", "caf\udce9"], "the thread id"),
        (["--set", "debater_a_persona=caf\udce9"], "context setting debater_a_persona"),
        (["--set", 'models={"judge": "caf\udce9"}'], "context setting models"),
    ],
)
def test_undecodable_thread_ids_and_settings_are_refused(
    script: Script, db: str, args: list[str], named: str
) -> None:
    # What Python makes of bytes the terminal could not decode: a lone surrogate.
    result = CliRunner().invoke(app, ["run", "debate", "Q?", *args])

    assert result.exit_code == 2, result.output
    assert f"error: {named} is not valid UTF-8 text" in result.stderr
    assert "Traceback" not in result.output
    assert script.calls == [] and not Path(db).exists()


def test_showing_an_undecodable_thread_id_is_a_usage_error(script: Script) -> None:
    result = CliRunner().invoke(app, ["show", "caf\udce9"])

    assert result.exit_code == 2, result.output
    assert "error: the thread id is not valid UTF-8 text" in result.stderr


def test_input_both_ways_or_none_is_a_usage_error(script: Script, tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("x")

    both = quorum_cli("run", "react", "x", "--file", str(tmp_path / "t.txt"))
    none = quorum_cli("run", "react")
    missing = quorum_cli("run", "react", "--file", str(tmp_path / "nope.txt"))

    assert (both.exit_code, none.exit_code, missing.exit_code) == (2, 2, 2)
    assert "not both" in both.output and "no input given" in none.output
    assert "cannot read --file" in missing.output


async def test_a_thread_that_never_started_is_not_completed(script: Script, db: str) -> None:
    # A disk that fills up right after the input checkpoint: step 0 is never saved.
    async with open_persistence(db) as kept:
        saved = kept.saver.aput

        async def full_after_input(*args, **kwargs):
            if args[2].get("source") != "input":
                raise OSError(28, "No space left on device")
            return await saved(*args, **kwargs)

        kept.saver.aput = full_after_input  # type: ignore[method-assign]
        graph = PATTERNS["react"].compile(checkpointer=kept.saver, store=kept.store)
        config = {"configurable": {"thread_id": "full"}, "metadata": {"quorum_pattern": "react"}}
        with pytest.raises(OSError, match="No space left"):
            await graph.ainvoke({"input": "x"}, config, durability="sync")

    info = await quorum.get_thread("full", database=db)

    assert info.status == "interrupted" and info.output == ""
    resumed = await quorum.resume("full", database=db)
    assert resumed.status == "completed" and resumed.output == "The answer is 42."


async def test_tool_calls_on_the_final_turn_are_never_run(script: Script) -> None:
    def stubborn(agent: str, messages) -> AIMessage:
        # Keeps asking for a tool, even on the turn that offers none.
        return AIMessage("facts so far", tool_calls=[{"name": "calculator",
                         "args": {"expression": "1+1"}, "id": f"c{len(messages)}"}])  # fmt: skip

    script.on("researcher", stubborn)

    thread = await quorum.run(
        "orchestrator", "Explain boiling", context=quorum.QuorumContext(max_tool_calls=2)
    )

    assert thread.status == "completed"
    assert thread.values["results"]["s1"] == "facts so far"
    researcher_calls = [c for c in script.calls if c.agent == "researcher"]
    assert len(researcher_calls) == 3  # two rounds of tools, then the final no-tool turn
    # Only the two offered rounds ran a tool: the final turn's call became its answer.
    tool_results = [m for m in researcher_calls[-1].messages if m.type == "tool"]
    assert len(tool_results) == 2


async def test_final_turn_with_only_tool_calls_is_a_named_error(script: Script) -> None:
    script.on(
        "researcher",
        lambda a, m: AIMessage(
            "", tool_calls=[{"name": "calculator", "args": {"expression": "1"}, "id": "x"}]
        ),  # fmt: skip
    )

    with pytest.raises(quorum.RunFailed, match="on its final turn, where none are offered"):
        await quorum.run("orchestrator", "Explain boiling", context=quorum.QuorumContext(
            max_tool_calls=0))  # fmt: skip


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c_and_names_the_thread(tmp_path: Path) -> None:
    with OpenAIStub() as stub:
        env = quorum_env(stub, tmp_path)
        held = stub.hold(lambda body: "You are the analyst" in json.dumps(body["messages"][0]))
        run = subprocess.Popen(
            [sys.executable, "-m", "quorum.cli", "run", "orchestrator", "Plan", "--thread", "st"],
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert held.arrived.wait(60), run.communicate(timeout=5)
            run.send_signal(signal.SIGTERM)
            _, err = run.communicate(timeout=30)
        finally:
            run.kill()
            run.communicate()
            held.release()

        assert run.returncode == 143, err
        assert err.strip().endswith("stopped; continue with `quorum resume st`")
        assert "Traceback" not in err
        resumed = subprocess.run(
            [sys.executable, "-m", "quorum.cli", "resume", "st"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr
        assert "status completed" in resumed.stderr


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_while_the_command_loads_is_one_line(tmp_path: Path, stop: signal.Signals) -> None:
    """The CLI takes seconds to import LangGraph, LangChain and openai; a SIGTERM or Ctrl-C
    in that time exits 143 or 130 with one line, before anything is saved."""
    env = {**os.environ, "QUORUM_DATA_DIR": str(tmp_path / "data")}
    run = subprocess.Popen(
        [sys.executable, "-m", "quorum.cli", "run", "react", "Q?", "--thread", "early"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        loading(run.pid)
        run.send_signal(stop)
        _, err = run.communicate(timeout=30)
    finally:
        run.kill()
        run.communicate()

    assert run.returncode == 128 + stop, err
    assert err == f"stopped ({stop.name}) while starting: nothing was run\n"
    assert not (tmp_path / "data").exists()


def _on_a_full_disk(command: list[str], disk: Path, env: dict[str, str]) -> list[str]:
    """`command` run in a mount namespace of its own, with a 200 KB tmpfs mounted at `disk`."""
    mounted = f'mount -t tmpfs -o size=200k tmpfs {disk} && exec "$@"'
    return ["unshare", "--mount", "--map-root-user", "sh", "-c", mounted, "sh", *command]


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", ["stub", "embedded"])
def test_a_full_disk_is_one_clear_line(tmp_path: Path, endpoint: str) -> None:
    # On the stub the database fills up; on the embedded model, joining the model does.
    disk = tmp_path / "data"
    disk.mkdir()
    with OpenAIStub() as stub:
        env = quorum_env(stub, tmp_path)
        if endpoint == "embedded":
            env = {k: v for k, v in env.items() if not k.startswith("QUORUM_")}
            env["QUORUM_DATA_DIR"] = str(disk)
        command = [sys.executable, "-m", "quorum.cli", "run", "react", "Q?", "--thread", "t"]
        done = subprocess.run(
            _on_a_full_disk(command, disk, env),
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    if endpoint == "stub":
        assert "the disk holding its database is full" in line
        assert "then continue with `quorum resume t`" in line
    else:
        assert "no room in" in line and "for the embedded model" in line


def test_a_read_only_database_can_still_be_shown(tmp_path: Path) -> None:
    """`show` and `threads` read a database in a folder mounted read-only (an archived run,
    another user's data): SQLite cannot make its shared-memory file there, and nothing is
    written."""
    data = tmp_path / "data"
    with OpenAIStub() as stub:
        env = quorum_env(stub, tmp_path)
        made = subprocess.run(
            [sys.executable, "-m", "quorum.cli", "run", "react", "What is 2+2?", "--thread", "r1"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
    before = sorted(path.name for path in data.iterdir())
    read_only = f'mount --bind {data} {data} && mount -o remount,bind,ro {data} && exec "$@"'
    shown = {}
    commands = (["show", "r1", "--json"], ["threads", "--json"], ["show", "r1", "--history"])
    for command in (*commands, ["report", "r1", "--output", str(tmp_path / "r1.html")]):
        done = subprocess.run(
            ["unshare", "--mount", "--map-root-user", "sh", "-c", read_only, "sh",
             sys.executable, "-m", "quorum.cli", *command],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        shown[command[0] + command[-1]] = done.stdout

    assert json.loads(shown["show--json"])["status"] == "completed"
    assert [t["thread_id"] for t in json.loads(shown["threads--json"])] == ["r1"]
    assert "completed" in (tmp_path / "r1.html").read_text()
    assert sorted(path.name for path in data.iterdir()) == before


def loading(pid: int) -> None:
    """Wait until process `pid` catches SIGTERM, as the CLI does only while it loads.

    Read from the kernel (/proc/PID/status): a fixed sleep missed the window on a fast
    machine, where the imports took less than the second the test waited.
    """
    mask = 1 << (signal.SIGTERM - 1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/status") as status:
            caught = next(line for line in status if line.startswith("SigCgt:"))
        if int(caught.split()[1], 16) & mask:
            return
        time.sleep(0.002)
    raise AssertionError(f"process {pid} never caught SIGTERM while it loaded")
