"""The command line's conventions, checked on the real `quorum` command in its own process.

Colour in a terminal (a pseudo-terminal from the `pty` module) and none when piped or with
NO_COLOR; nothing cut when piped; `--version`, `-h`, shell completion, `--json`, the exit code
of a bad `--model`, defaults in the help, and the per-user data folder that read-only commands
never create. The models are the scripted OpenAI stub on loopback.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quorum.cli import app
from quorum.settings import Settings, get_settings
from quorum.testing.stub import STUB_MODEL, OpenAIStub

QUORUM = str(Path(sys.executable).with_name("quorum"))
ESCAPE = "\x1b["
LONG_ANSWER = "The tool says 42, and " + "so on and so forth " * 40 + "[the end]"


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIStub]:
    """The stub as the model endpoint; its final answers are one very long line."""
    with OpenAIStub() as running:
        running.responder = lambda body: (
            LONG_ANSWER if any(m.get("role") == "tool" for m in body["messages"]) else None
        )
        monkeypatch.setenv("QUORUM_BASE_URL", running.base_url)
        monkeypatch.setenv("QUORUM_MODEL", STUB_MODEL)
        monkeypatch.setenv("QUORUM_API_KEY", "test")
        yield running


def environment(**changes: str) -> dict[str, str]:
    """This test's environment, as a user's shell would pass it, without colour overrides."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env.pop("TTY_COMPATIBLE", None)
    return env | {"TERM": "xterm-256color", "COLUMNS": "80"} | changes


def piped(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [QUORUM, *args], env=env or environment(), capture_output=True, text=True, timeout=120
    )


def in_terminal(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `quorum` with a pseudo-terminal as stdin, stdout and stderr; its exit code and output."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [QUORUM, *args],
        stdin=follower, stdout=follower, stderr=follower,
        env=env or environment(), start_new_session=True,
    )  # fmt: skip
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(leader)
    return code, b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.slow
def test_a_terminal_gets_colour(stub: OpenAIStub) -> None:
    code, output = in_terminal("run", "react", "What is 6*7?", "--thread", "tty")

    assert code == 0, output
    assert ESCAPE in output
    assert "tty" in output


@pytest.mark.slow
def test_no_color_turns_colour_off_in_a_terminal(stub: OpenAIStub) -> None:
    code, output = in_terminal(
        "run", "react", "What is 6*7?", "--thread", "nc", env=environment(NO_COLOR="1")
    )

    assert code == 0, output
    assert ESCAPE not in output
    assert "status completed" in output


@pytest.mark.slow
def test_piped_output_has_no_colour_and_nothing_cut(stub: OpenAIStub) -> None:
    thread = "a-rather-long-thread-id-1234"
    ran = piped("run", "react", "What is 6*7?", "--thread", thread)
    listed = piped("threads")
    shown = piped("show", thread)
    history = piped("show", thread, "--history")

    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == LONG_ANSWER + "\n"
    for done in (ran, listed, shown, history):
        assert ESCAPE not in done.stdout + done.stderr
    data = json.loads(quorum("show", thread, "--json").stdout)
    row = next(line for line in listed.stdout.splitlines() if thread in line)
    # The whole id and the whole date-time (to the second) on one line: no "…", no wrap.
    assert data["updated_at"][:19] in row and "…" not in listed.stdout
    assert LONG_ANSWER in shown.stdout
    assert len(data["checkpoints"]) == 5
    for checkpoint in data["checkpoints"]:
        row = next(
            line for line in history.stdout.splitlines() if checkpoint["checkpoint_id"] in line
        )
        assert checkpoint["created_at"] in row


def quorum(*args: str, **kwargs):
    return CliRunner().invoke(app, list(args), prog_name="quorum", **kwargs)


def words(text: str) -> str:
    """Help text without its boxes, on one line."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", text).split())


def test_version_and_short_help() -> None:
    assert quorum("--version").stdout == f"quorum {version('quorum')}\n"
    for args in (["-h"], ["run", "-h"], ["threads", "-h"], ["model", "serve", "-h"]):
        shown = quorum(*args)
        assert shown.exit_code == 0 and "Usage: quorum" in shown.stdout, args


def test_help_shows_the_defaults() -> None:
    run_help = words(quorum("run", "--help").stdout)
    approve_help = words(quorum("approve", "--help").stdout)
    resume_help = words(quorum("resume", "--help").stdout)

    assert "Thread id for the run. [default: (a new id)]" in run_help
    assert "[default: (QUORUM_DATABASE, else quorum.db in the data folder)]" in run_help
    assert "[default: (every waiting call)]" in approve_help
    assert "--from" in resume_help and "[default: (the latest checkpoint)]" in resume_help


def test_shell_completion_shows_installs_and_completes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHELL", "/bin/bash")
    # Typer finds the shell from the process tree (shellingham), which depends on how the
    # tests were started (none is found under a detached job): its own test switch makes
    # the options take the shell by name instead.
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    (tmp_path / "home").mkdir()

    shown = quorum("--show-completion", "bash")
    installed = quorum("--install-completion", "bash")
    completed = quorum(
        env={"_QUORUM_COMPLETE": "complete_bash", "COMP_WORDS": "quorum run de", "COMP_CWORD": "2"}
    )

    assert shown.exit_code == 0, (shown.output, shown.exception)
    assert "complete -o default -F _quorum_completion quorum" in shown.stdout
    assert installed.exit_code == 0, installed.output
    script = tmp_path / "home" / ".bash_completions" / "quorum.sh"
    assert f"bash completion installed in {script}" in installed.stdout
    assert "complete -o default -F _quorum_completion quorum" in script.read_text()
    assert f"source '{script}'" in (tmp_path / "home" / ".bashrc").read_text()
    assert completed.stdout.split() == ["debate"]


def test_json_on_run_and_resume(stub: OpenAIStub) -> None:
    ran = quorum("run", "react", "What is 6*7?", "--thread", "j", "--json")
    again = quorum("resume", "j", "--json")

    assert ran.exit_code == 0, ran.output
    data = json.loads(ran.stdout)
    assert (data["thread_id"], data["status"], data["output"]) == ("j", "completed", LONG_ANSWER)
    assert data["usage"]["agent"]["calls"] == 2
    assert "thread j  status completed" in ran.stderr  # the summary stays on stderr
    assert json.loads(again.stdout)["output"] == LONG_ANSWER


def test_json_run_exits_with_the_status_code(stub: OpenAIStub) -> None:
    stub.responder = None  # the agent keeps calling the calculator
    ran = quorum("run", "react", "6*7?", "--set", "max_steps=1", "--json")

    assert ran.exit_code == 4, ran.output
    assert json.loads(ran.stdout)["status"] == "step_limit"


@pytest.mark.parametrize(
    "args",
    [["--model", "gpt-9"], ["--set", 'models={"judge": "gpt-9"}']],
    ids=["--model", "--set models"],
)
def test_a_model_the_endpoint_lacks_is_bad_input(stub: OpenAIStub, args: list[str]) -> None:
    ran = quorum("run", "debate", "Tabs?", *args)

    assert ran.exit_code == 2
    assert ran.stderr.startswith(f"error: the model endpoint {stub.base_url} has no model 'gpt-9'")
    assert len(ran.stderr.strip().splitlines()) == 1
    assert stub.chat_requests() == []


def test_the_data_folder_is_per_user_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("QUORUM_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))

    assert Settings().data_dir == tmp_path / "xdg" / "quorum"
    assert Settings().database_target == str(tmp_path / "xdg" / "quorum" / "quorum.db")
    monkeypatch.setenv("QUORUM_DATA_DIR", str(tmp_path / "mine"))
    assert Settings().database_target == str(tmp_path / "mine" / "quorum.db")


def test_runs_from_any_folder_share_the_per_user_database(
    stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("QUORUM_DATA_DIR")
    get_settings.cache_clear()
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()

    monkeypatch.chdir(first)
    ran = quorum("run", "react", "6*7?", "--thread", "here")
    monkeypatch.chdir(second)
    listed = quorum("threads", "--json")

    assert ran.exit_code == 0, ran.output
    assert [t["thread_id"] for t in json.loads(listed.stdout)] == ["here"]
    assert (tmp_path / "xdg-data" / "quorum" / "quorum.db").is_file()
    assert list(first.iterdir()) == [] and list(second.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "code", "stdout"),
    [
        (["threads"], 0, "no threads yet"),
        (["threads", "--json"], 0, "[]"),
        (["show", "t1"], 1, ""),
        (["show", "t1", "--history"], 1, ""),
        (["resume", "t1"], 1, ""),
        (["resume", "t1", "--from", "1f0"], 1, ""),
        (["threads", "--delete", "t1"], 1, ""),
        (["threads", "--prune", "--keep", "0", "--yes"], 0, ""),
        (["model", "status"], 0, "not running"),
    ],
)
def test_read_only_commands_create_no_database(
    tmp_path: Path, args: list[str], code: int, stdout: str
) -> None:
    data = tmp_path / "data"

    result = quorum(*args)

    assert result.exit_code == code, result.output
    assert result.stdout.strip() == stdout
    if code:
        assert f"there is no checkpoint database at '{data / 'quorum.db'}' yet" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["empty file", "another program's database"])
@pytest.mark.parametrize(
    ("args", "code", "stdout"),
    [
        (["threads", "--json"], 0, "[]"),
        (["show", "t1"], 1, ""),
        (["resume", "t1"], 1, ""),
        (["approve", "t1"], 1, ""),
    ],
)
def test_a_database_without_checkpoints_reads_as_empty(
    tmp_path: Path, kind: str, args: list[str], code: int, stdout: str
) -> None:
    """A file that holds no checkpoints (touched, or another program's) is no thread, not
    LangGraph's "no such table" traceback, and stays as it was."""
    database = tmp_path / "data" / "quorum.db"
    database.parent.mkdir()
    database.touch()
    if kind != "empty file":
        with closing(sqlite3.connect(database)) as conn, conn:
            conn.execute("CREATE TABLE notes (text TEXT)")
    before = database.read_bytes()

    result = quorum(*args)

    assert result.exit_code == code, result.output
    assert result.stdout.strip() == stdout
    if code:
        assert result.stderr.startswith(
            f"error: no thread 't1': there are no checkpoints in '{database}' yet"
        ), result.stderr
    assert database.read_bytes() == before
