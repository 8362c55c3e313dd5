"""Live progress of `quorum run`: plain lines when piped, a live display in a terminal.

Both run the CLI as a process of its own against the scripted server; the terminal is a
pseudo-terminal (pty) the test reads.
"""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from quorum.testing.stub import OpenAIStub, quorum_env

CURSOR_HIDDEN = "\x1b[?25l"
"""What rich's live display writes first (and shows again when it stops)."""
ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as running:
        running.delay = 0.5  # long enough for the display to show each agent running
        yield running


@pytest.mark.slow
def test_piped_run_prints_plain_progress_lines(stub: OpenAIStub, tmp_path: Path) -> None:
    env = quorum_env(stub, tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "quorum.cli", "run", "orchestrator", "Plan a launch",
         "--thread", "p1", "--set", "max_tokens=100000"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Stub answer to:")
    assert "\x1b" not in done.stderr  # no cursor movement, no colour
    lines = done.stderr.splitlines()
    for agent in ("planner", "researcher (s1)", "analyst (s2)", "writer (s3)", "synthesizer"):
        assert f"  ▶ {agent}" in lines
        finished = next(line for line in lines if line.startswith(f"  ✓ {agent}  "))
        assert re.search(r"steps done \d+ · tokens so far [\d,]+ · cost \$0\.0000", finished)
        # With a token budget, the share of it used so far.
        assert re.search(r"tokens budget \d+% used$", finished), finished
    last = next(line for line in lines if line.startswith("  ✓ synthesizer"))
    # One fewer than the 8 before f0cf1f2: the first wave leaves from the planner, with no
    # `dispatch` join before it.
    assert "steps done 7 " in last
    assert any(line.startswith("thread p1  status completed") for line in lines)


@pytest.mark.slow
def test_terminal_run_shows_a_live_display(stub: OpenAIStub, tmp_path: Path) -> None:
    env = quorum_env(stub, tmp_path) | {"TERM": "xterm-256color", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "quorum.cli", "run", "orchestrator", "Plan a launch",
         "--thread", "p2"],
        env=env, cwd=tmp_path, stdin=secondary, stdout=subprocess.PIPE, stderr=secondary,
    )  # fmt: skip
    os.close(secondary)
    shown = b""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        assert process.stdout is not None
        answer = process.stdout.read().decode()
        code = process.wait(timeout=30)
    finally:
        os.close(primary)
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    screen = shown.decode(errors="replace")
    plain = ESCAPE.sub("", screen)

    assert code == 0, plain[-2000:]
    assert answer.startswith("Stub answer to:")  # the answer still goes to stdout alone
    assert CURSOR_HIDDEN in screen  # rich's live display ran
    # While the planner's call waited, the display showed it running with its time so far,
    # and the totals line under it.
    assert re.search(r"planner\s+\d+\.\d s", plain), plain[:3000]
    assert re.search(r"analyst \(s2\)\s+\d+\.\d s", plain)
    assert "steps done 0 · tokens so far 0" in plain
    # Finished agents are printed as lines above the display; the summary and ledger follow.
    assert "✓ synthesizer" in plain
    assert "thread p2  status completed" in plain
    assert "in tok" in plain
    assert "▶ planner" not in plain  # a terminal shows who is running live, not as lines


@pytest.mark.slow
def test_resumed_run_counts_what_the_thread_spent_before(stub: OpenAIStub, tmp_path: Path) -> None:
    stub.delay = 0.0
    env = quorum_env(stub, tmp_path)

    def quorum(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "quorum.cli", *args],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    stopped = quorum(
        "run", "orchestrator", "Plan a launch", "--thread", "p3", "--set", "max_model_calls=3"
    )
    resumed = quorum("resume", "p3", "--set", "max_model_calls=100")

    assert stopped.returncode == 4, stopped.stderr
    assert resumed.returncode == 0, resumed.stderr
    spent = re.search(
        r"status budget_exceeded  tokens ([\d,]+) .* over (\d+) model calls", stopped.stderr
    )
    assert spent, stopped.stderr
    tokens_before, calls_before = int(spent[1].replace(",", "")), int(spent[2])
    first = next(line for line in resumed.stderr.splitlines() if line.startswith("  ✓ "))
    progress = re.search(r"tokens so far ([\d,]+) .* calls budget (\d+)% used", first)
    assert progress, first
    # The budgets count the whole thread: the resume starts from what the run spent.
    assert int(progress[1].replace(",", "")) > tokens_before
    assert int(progress[2]) >= calls_before
