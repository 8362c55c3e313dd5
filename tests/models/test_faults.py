"""Model endpoint faults, counted at the endpoint: bounded retries, honest waits, resumable runs.

The CLI (in this process, through typer's runner: nothing here kills a process) runs a ReAct
thread against the scripted OpenAI-compatible stub on loopback, which plays a faulty endpoint
on the agent's second call (the one after its calculator result): HTTP 500, 503 and 429 (with
and without Retry-After), a reply slower than QUORUM_TIMEOUT, a connection closed without a
reply, and a 200 with a body cut mid-JSON. Every count and every wait is measured at the
stub, not asked of Quorum: how many requests each call made, and how far apart they came.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quorum.cli import app
from quorum.settings import get_settings
from quorum.testing.stub import STUB_MODEL, OpenAIStub, Recorded

TIMEOUT = 1.0
RETRY_WAIT = 0.05
SECRET = "sk-quorum-TOPSECRET-4f9a2c77e1"


def after_tool(body: dict) -> bool:
    """The agent's second call: it has the calculator's result."""
    return any(m.get("role") == "tool" for m in body["messages"])


def first_call(stub: OpenAIStub) -> list[Recorded]:
    return [r for r in stub.chat_requests() if not after_tool(r.body or {})]


def second_call(stub: OpenAIStub) -> list[Recorded]:
    return [r for r in stub.chat_requests() if after_tool(r.body or {})]


FAULTS: dict[str, Callable[[OpenAIStub, int], None]] = {
    "500": lambda stub, times: stub.fail(500, times=times, when=after_tool),
    "503": lambda stub, times: stub.fail(503, times=times, when=after_tool),
    "429": lambda stub, times: stub.fail(429, times=times, when=after_tool),
    "timeout": lambda stub, times: stub.stall(TIMEOUT + 2, times=times, when=after_tool),
    "dropped": lambda stub, times: stub.drop(times=times, when=after_tool),
    "malformed": lambda stub, times: stub.malformed(times=times, when=after_tool),
}
SAID = {
    "500": "HTTP 500: scripted failure",
    "503": "HTTP 503: scripted failure",
    "429": "HTTP 429: scripted failure",
    "timeout": f"no answer within {TIMEOUT:g} s",
    "dropped": "connection failed",
    "malformed": "malformed response body",
}


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as running:
        yield running


class Cli:
    """Runs `quorum` commands with the environment a deployment would set, keeping all output."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stub: OpenAIStub) -> None:
        self.monkeypatch = monkeypatch
        self.printed: list[str] = []
        self.configure(
            BASE_URL=stub.base_url,
            API_KEY=SECRET,
            MODEL=STUB_MODEL,
            TIMEOUT=TIMEOUT,
            MAX_ATTEMPTS=3,
            RETRY_WAIT=RETRY_WAIT,
            RETRY_MAX_WAIT=5,
        )

    def configure(self, **settings: object) -> None:
        for name, value in settings.items():
            self.monkeypatch.setenv(f"QUORUM_{name}", str(value))
        get_settings.cache_clear()

    def __call__(self, *args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(app, list(args))
        self.printed += [result.stdout, result.stderr]
        return result.exit_code, result.stdout, result.stderr

    def thread(self, thread: str) -> dict:
        code, out, err = self("show", thread, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, stub: OpenAIStub) -> Cli:
    return Cli(monkeypatch, stub)


def error_line(err: str) -> str:
    """The one line the CLI printed for the error (progress lines aside)."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == [lines[-1]], err  # exactly one, and nothing after it
    return errors[0]


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_transient_fault_costs_one_more_request(fault: str, stub: OpenAIStub, cli: Cli) -> None:
    FAULTS[fault](stub, 1)

    code, out, err = cli("run", "react", "What is 6 times 7?", "--thread", "t1")

    assert code == 0, err
    assert "The tool says" in out
    assert len(first_call(stub)) == 1
    retried = second_call(stub)
    assert len(retried) == 2
    gap = retried[1].started - retried[0].started
    if fault == "timeout":
        assert TIMEOUT <= gap < TIMEOUT + 1.5, gap  # the client gave up at its timeout
    else:
        assert gap < 1.0, gap  # backoff from QUORUM_RETRY_WAIT, no header asked for more
    shown = cli.thread("t1")
    assert shown["status"] == "completed"
    assert shown["usage"]["agent"]["attempts"] == 3  # as many as the endpoint received


@pytest.mark.parametrize(
    ("status", "headers", "wait"),
    [(429, {"Retry-After": "1"}, 1.0), (503, {"Retry-After-Ms": "1500"}, 1.5)],
    ids=["429-retry-after", "503-retry-after-ms"],
)
def test_retry_after_is_waited_for(
    status: int, headers: dict[str, str], wait: float, stub: OpenAIStub, cli: Cli
) -> None:
    stub.fail(status, headers=headers, when=after_tool)

    code, _, err = cli("run", "react", "What is 6 times 7?", "--thread", "w1")

    assert code == 0, err
    retried = second_call(stub)
    assert [r.status for r in retried] == [status, 200]
    assert retried[1].started - retried[0].finished >= wait


@pytest.mark.parametrize(
    ("fault", "attempts"), [("500", 3), ("dropped", 2), ("timeout", 2), ("malformed", 4)]
)
@pytest.mark.slow
def test_a_persistent_fault_stops_at_max_attempts_and_resume_continues(
    fault: str, attempts: int, stub: OpenAIStub, cli: Cli
) -> None:
    FAULTS[fault](stub, attempts)
    cli.configure(MAX_ATTEMPTS=attempts)

    code, _, err = cli("run", "react", "What is 6 times 7?", "--thread", "p1")

    assert code == 1
    line = error_line(err)
    assert line.startswith(
        "error: react run p1 stopped: agent 'agent' failed: the model endpoint failed agent "
        f"'agent''s call: {SAID[fault]}"
    ), line
    assert f"({attempts} attempts)" in line
    assert "quorum resume p1" in line
    assert len(first_call(stub)) == 1
    assert len(second_call(stub)) == attempts
    failed = cli.thread("p1")
    assert failed["status"] == "failed"
    assert SAID[fault] in failed["error"]

    code, out, err = cli("resume", "p1")

    assert code == 0, err
    assert "The tool says" in out
    assert len(first_call(stub)) == 1  # the call that had its reply was not asked again
    assert len(second_call(stub)) == attempts + 1
    resumed = cli.thread("p1")
    assert resumed["status"] == "completed"
    assert resumed["usage"]["agent"]["attempts"] == len(stub.chat_requests())


@pytest.mark.parametrize(
    ("status", "said"),
    [
        (400, "the model endpoint rejected agent 'agent''s request (HTTP 400): scripted failure"),
        (401, "the model endpoint refused the API key (agent 'agent'): scripted failure"),
        (404, "the model endpoint does not know the model for agent 'agent'"),
    ],
)
def test_a_request_retrying_cannot_fix_is_sent_once(
    status: int, said: str, stub: OpenAIStub, cli: Cli
) -> None:
    stub.fail(status, times=3, when=after_tool)

    code, _, err = cli("run", "react", "What is 6 times 7?", "--thread", "n1")

    assert code == 1
    assert error_line(err).startswith(f"error: react run n1 stopped: agent 'agent' failed: {said}")
    assert [r.status for r in second_call(stub)] == [status]
    assert cli.thread("n1")["status"] == "failed"
    stub.reset()

    code, _, err = cli("resume", "n1")

    assert code == 0, err
    assert len(first_call(stub)) == 0  # only the failed call was asked again
    assert [r.status for r in second_call(stub)] == [200]


def test_a_retry_after_beyond_the_longest_wait_fails_at_once(stub: OpenAIStub, cli: Cli) -> None:
    stub.fail(429, times=3, headers={"Retry-After": "120"}, when=after_tool)

    code, _, err = cli("run", "react", "What is 6 times 7?", "--thread", "l1")

    assert code == 1
    line = error_line(err)
    assert "it asks to retry after 120 s" in line
    assert "raise QUORUM_RETRY_MAX_WAIT above 120" in line
    assert [r.status for r in second_call(stub)] == [429]


def test_an_echoed_api_key_is_never_shown_nor_stored(
    stub: OpenAIStub, cli: Cli, tmp_path: Path
) -> None:
    echo = f"Incorrect API key provided: {SECRET}. You can find your key at ..."
    stub.fail(500, times=3, message=echo, when=after_tool)
    failed_later = cli("run", "react", "What is 6 times 7?", "--thread", "s1")
    stub.fail(400, message=echo)
    failed_first = cli("run", "react", "What is 6 times 7?", "--thread", "s2")
    for code, _, err in (failed_first, failed_later):
        assert code == 1
        assert "Incorrect API key provided: [redacted]." in error_line(err)
    listed = cli("threads", "--json")
    shown = [cli("show", thread, "--json") for thread in ("s1", "s2")]
    shown_text = [cli("show", thread) for thread in ("s1", "s2")]
    resumed = [cli("resume", thread) for thread in ("s1", "s2")]

    assert [code for code, _, _ in [listed, *shown, *shown_text, *resumed]] == [0] * 7
    # The key went out with every request, and came back in 4 error bodies.
    assert {r.headers["authorization"] for r in stub.requests} == {f"Bearer {SECRET}"}
    assert sorted(r.status for r in stub.chat_requests() if r.status != 200) == [400, 500, 500, 500]
    assert all(SECRET not in text for text in cli.printed)
    assert all("[redacted]" in json.loads(out)["error"] for _, out, _ in shown)
    stored = [path for path in (tmp_path / "data").rglob("*") if path.is_file()]
    assert any(path.name == "quorum.db" for path in stored)
    for path in stored:
        assert SECRET.encode() not in path.read_bytes(), path
        assert SECRET.encode("utf-16-le") not in path.read_bytes(), path
    found = subprocess.run(["grep", "-r", "-l", SECRET, str(tmp_path)], capture_output=True)
    assert found.returncode == 1, found.stdout
