"""The answer as it is written: streamed to stdout by the CLI, to `on_event` in Python.

Measured from outside: the scripted OpenAI server streams its reply slowly and records when
each request ended; the CLI runs as its own process, with stdout on a pseudo-terminal or a
pipe, and the test timestamps every byte it reads. Token counts are the server's.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import quorum
from quorum.errors import RunFailed
from quorum.lifecycle import RunEvent
from quorum.testing.stub import STUB_MODEL, OpenAIStub, quorum_env, schema_name

ANSWER = "".join(f"Line {n} of the answer, written a few words at a time.\n" for n in range(6))


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIStub]:
    with OpenAIStub() as running:
        monkeypatch.setenv("QUORUM_BASE_URL", running.base_url)
        monkeypatch.setenv("QUORUM_MODEL", STUB_MODEL)
        monkeypatch.setenv("QUORUM_API_KEY", "test")
        yield running


def timed_run(
    stub: OpenAIStub, tmp_path: Path, *args: str, terminal: bool
) -> tuple[list[tuple[float, bytes]], str, int]:
    """Run `quorum run ARGS`; what reached stdout and when, stderr, and the exit code."""
    if terminal:
        reader, writer = pty.openpty()
    else:
        reader, writer = os.pipe()
    command = [sys.executable, "-m", "quorum.cli", "run", *args]
    process = subprocess.Popen(
        command,
        env=quorum_env(stub, tmp_path),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=writer,
        stderr=subprocess.PIPE,
    )
    os.close(writer)
    received: list[tuple[float, bytes]] = []

    def read() -> None:
        while True:
            try:
                data = os.read(reader, 4096)
            except OSError:  # a pseudo-terminal whose other side closed
                return
            if not data:
                return
            received.append((time.monotonic(), data))

    thread = threading.Thread(target=read)
    thread.start()
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        thread.join(10)
        os.close(reader)
    return received, stderr.decode(), process.returncode


def first(received: list[tuple[float, bytes]], text: str) -> float:
    """When the first byte of `text` had arrived (it must arrive whole in the end)."""
    so_far = b""
    for at, data in received:
        so_far += data
        if text.encode() in so_far.replace(b"\r\n", b"\n"):
            return at
    raise AssertionError(f"{text!r} never reached stdout: {so_far!r}")


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "piped"])
def test_the_answer_reaches_stdout_before_its_call_ends(
    stub: OpenAIStub, tmp_path: Path, terminal: bool
) -> None:
    """The final agent's reply streams at 24 characters every 0.1 s: its first line is on
    stdout (a terminal: token by token; a pipe: a line at a time) long before it ends."""
    stub.responder = lambda body: ANSWER if schema_name(body) is None else None
    stub.chunk_delay = 0.1

    received, stderr, code = timed_run(
        stub, tmp_path, "react", "Say six lines.", "--thread", "s1", terminal=terminal
    )

    assert code == 0, stderr
    (call,) = stub.chat_requests()
    assert call.body is not None and call.body["stream"] is True
    assert first(received, "Line 0 of the answer") < call.finished - 0.5
    shown = b"".join(data for _, data in received).replace(b"\r\n", b"\n").decode()
    assert shown == ANSWER, "the answer is printed once, as written"
    assert "thread s1" in stderr


def test_no_stream_prints_the_answer_once_it_is_done(stub: OpenAIStub, tmp_path: Path) -> None:
    stub.responder = lambda body: ANSWER if schema_name(body) is None else None
    stub.chunk_delay = 0.05

    received, stderr, code = timed_run(
        stub, tmp_path, "react", "Say six lines.", "--no-stream", terminal=False
    )

    assert code == 0, stderr
    (call,) = stub.chat_requests()
    assert call.body is not None and not call.body.get("stream")
    assert first(received, "Line 0") > call.finished
    assert b"".join(data for _, data in received).decode() == ANSWER


def test_streaming_changes_no_token_count_or_cost(stub: OpenAIStub, tmp_path: Path) -> None:
    """The same orchestrator run streamed and not: the ledgers match each other and the
    usage the server reported, call for call."""
    ledgers, reported = [], []
    for flag in ("--stream", "--no-stream"):
        before = len(stub.chat_requests())
        thread = flag.strip("-")
        _, stderr, code = timed_run(
            stub,
            tmp_path,
            "orchestrator",
            "Compare A and B",
            "--thread",
            thread,
            flag,
            terminal=False,
        )
        assert code == 0, stderr
        calls = stub.chat_requests()[before:]
        assert {bool((c.body or {}).get("stream")) for c in calls} == {flag == "--stream"}
        reported.append(sum(c.usage["total_tokens"] for c in calls if c.usage))
        shown = subprocess.run(
            [sys.executable, "-m", "quorum.cli", "show", thread, "--json"],
            env=quorum_env(stub, tmp_path),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        ledgers.append(json.loads(shown.stdout)["ledger"])

    assert counts(ledgers[0]) == counts(ledgers[1])
    for ledger, total in zip(ledgers, reported, strict=True):
        assert ledger["total"]["input_tokens"] + ledger["total"]["output_tokens"] == total
        assert total > 0


def counts(ledger: dict) -> dict[str, dict]:
    """A ledger's counts per agent: everything but time."""
    keep = ("calls", "input_tokens", "output_tokens", "cost_usd", "attempts", "errors")
    return {agent: {k: row[k] for k in keep} for agent, row in ledger["agents"].items()}


async def test_a_replayed_reply_is_shown_whole_once_and_marked(stub: OpenAIStub) -> None:
    """The judge's reasoning was answered, then its ruling failed: the resume shows the
    reasoning from the journal, whole, once, as replayed, and asks the server only for the
    ruling."""
    stub.fail(400, when=lambda body: schema_name(body) == "Ruling")
    events: list[RunEvent] = []
    with pytest.raises(RunFailed):
        await quorum.run(
            "debate", "Is 7 prime?", thread_id="r1", on_event=events.append, stream=True
        )
    judged = [e for e in events if e.kind == "wrote" and e.agent == "judge"]
    assert judged and not any(e.replayed for e in judged)
    reasoning = "".join(e.text for e in judged)

    before = len(stub.chat_requests())
    events.clear()
    info = await quorum.resume("r1", on_event=events.append, stream=True)

    assert info.status == "completed"
    shown = [e for e in events if e.kind == "wrote" and e.agent == "judge" and e.replayed]
    assert [e.text for e in shown] == [reasoning]
    assert not shown[0].structured and not shown[0].answer
    asked = [schema_name(body) for body in stub.chat_bodies()[before:]]
    assert asked == ["Ruling"]
    ledger = await quorum.ledger("r1")
    assert ledger.agents["judge"].calls == 2, "each reply is journaled once"


def test_a_repeated_paragraph_is_never_shown(stub: OpenAIStub, tmp_path: Path) -> None:
    """The answer's writer repeats a paragraph word for word: stdout shows it once, as the
    thread keeps it, with no second copy of the answer after it."""
    repeated = "Use SQLite.\n\n- small\n- local\n\nTrade-offs:\n\n- small\n- local\n"
    stub.responder = lambda body: repeated if schema_name(body) is None else None
    stub.chunk_delay = 0.01

    received, stderr, code = timed_run(stub, tmp_path, "react", "Which?", terminal=False)

    assert code == 0, stderr
    shown = b"".join(data for _, data in received).decode()
    assert shown == "Use SQLite.\n\n- small\n- local\n\nTrade-offs:\n"
    assert "as finally given" not in stderr


def test_an_endpoint_that_streams_no_usage_is_counted_roughly_not_free(
    stub: OpenAIStub, tmp_path: Path
) -> None:
    """Some servers leave the usage out of a stream: the calls are estimated (so budgets
    hold) and the CLI says so once."""
    stub.stream_usage = False
    stub.responder = lambda body: ANSWER if schema_name(body) is None else None

    _, stderr, code = timed_run(
        stub, tmp_path, "react", "Say six lines.", "--thread", "u1", terminal=False
    )

    assert code == 0, stderr
    assert stderr.count("reported no token usage") == 1
    shown = subprocess.run(
        [sys.executable, "-m", "quorum.cli", "show", "u1", "--json"],
        env=quorum_env(stub, tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    total = json.loads(shown.stdout)["ledger"]["total"]
    assert total["output_tokens"] >= len(ANSWER) // 4 - 1 and total["input_tokens"] > 0


def test_verbose_streams_every_agents_reply_under_its_name(
    stub: OpenAIStub, tmp_path: Path
) -> None:
    """`--verbose`: each agent's text reply reaches stderr, whole and once, under a line that
    names the agent; the answer alone is on stdout."""
    said: list[str] = []

    def numbered(body: dict) -> str | None:
        if schema_name(body) is not None:
            return None
        said.append(f"Reply {len(said)} in a few words.")
        return said[-1]

    stub.responder = numbered
    stub.chunk_delay = 0.01

    received, stderr, code = timed_run(
        stub, tmp_path, "orchestrator", "Compare A and B", "--verbose", terminal=False
    )

    assert code == 0, stderr
    *talk, answer = said
    assert b"".join(data for _, data in received).decode().strip() == answer
    for text in talk:
        assert stderr.count(text) == 1, stderr
    assert answer not in stderr
    named = [line.split("✎ ", 1)[1] for line in stderr.splitlines() if "✎ " in line]
    assert {"planner", "researcher", "analyst", "writer"} <= set(named), stderr
    # Each reply follows the line that names its agent.
    for agent in ("researcher", "analyst"):
        shown = stderr.split(f"✎ {agent}\n", 1)[1].split("\n", 1)[0]
        assert shown in talk, stderr
