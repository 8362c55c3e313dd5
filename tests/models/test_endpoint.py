"""A bad endpoint, key, model name or port: one clear message naming the setting, in seconds."""

from __future__ import annotations

import socket
import time

import pytest
from typer.testing import CliRunner

import quorum
from quorum.cli import app
from quorum.context import QuorumContext
from quorum.errors import UsageError
from quorum.testing.stub import STUB_MODEL, OpenAIStub

runner = CliRunner()


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch):
    with OpenAIStub() as running:
        monkeypatch.setenv("QUORUM_BASE_URL", running.base_url)
        monkeypatch.setenv("QUORUM_MODEL", STUB_MODEL)
        yield running


def run_quorum(*args: str) -> tuple[int, str, float]:
    started = time.monotonic()
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stderr.strip(), time.monotonic() - started


def assert_nothing_saved() -> None:
    assert runner.invoke(app, ["threads"]).stdout.strip() == "no threads yet"


def test_unreachable_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setenv("QUORUM_BASE_URL", f"http://127.0.0.1:{closed_port}/v1")

    code, message, seconds = run_quorum("run", "react", "hi")

    assert code == 1
    assert message == (
        f"error: cannot reach the model endpoint http://127.0.0.1:{closed_port}/v1 "
        "(check QUORUM_BASE_URL and that the server is running)"
    )
    assert seconds < 10
    assert_nothing_saved()


def test_refused_api_key_is_named_but_never_shown(
    stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub.api_key = "the-right-key"
    monkeypatch.setenv("QUORUM_API_KEY", "sk-wrong-secret-123")

    code, message, seconds = run_quorum("run", "debate", "Tabs or spaces?")

    assert code == 1
    assert message == (
        f"error: the model endpoint {stub.base_url} refused the API key (check QUORUM_API_KEY)"
    )
    assert "sk-wrong-secret-123" not in message
    assert seconds < 10
    assert_nothing_saved()


def test_unknown_model_name(stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch) -> None:
    code, message, _ = run_quorum("run", "pipeline", "Water", "--set", 'models={"judge": "gpt-9"}')

    assert code == 2  # a model name is the run's input: bad input
    assert message == (
        f"error: the model endpoint {stub.base_url} has no model 'gpt-9' (for agent 'judge'); "
        f"it serves: {STUB_MODEL} (check QUORUM_MODEL or the context's 'model' and 'models')"
    )
    assert_nothing_saved()


def test_a_good_endpoint_passes_the_checks(stub: OpenAIStub) -> None:
    code, message, _ = run_quorum("run", "react", "What is 6 times 7?", "--thread", "ok")

    assert code == 0, message
    assert "thread ok  status completed" in message


def test_embedded_port_already_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("QUORUM_EMBEDDED_PORT", str(port))

        code, message, seconds = run_quorum("run", "react", "hi")

    assert code == 1
    assert message == (
        f"error: port {port} for the embedded model is already taken "
        "(set QUORUM_EMBEDDED_PORT to a free port, or 0 to pick one)"
    )
    assert seconds < 5
    assert_nothing_saved()


async def test_the_endpoint_lists_its_models_once_for_all_runs_of_a_loop(
    stub: OpenAIStub,
) -> None:
    """An application's runs (one event loop) ask the endpoint for its models once, and a
    model it does not serve is still refused, from that list."""
    for n in range(3):
        await quorum.run("react", "What is 6 times 7?", thread_id=f"t{n}")
    with pytest.raises(UsageError, match="has no model 'gpt-9'"):
        await quorum.run("react", "Hi", context=QuorumContext(model="gpt-9"), thread_id="t9")

    listed = [r for r in stub.requests if r.method == "GET" and r.path.endswith("/models")]
    assert len(listed) == 1
    assert len(stub.chat_requests()) == 3 * 2  # two calls a run, none for the refused one
