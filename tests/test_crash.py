"""Durable resume across a real crash: `quorum run` killed with SIGKILL, then `quorum resume`.

The CLI runs as a separate process against the scripted OpenAI-compatible stub on loopback,
which counts every model call: a resumed run must not ask again for any step that finished.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from quorum.testing import forks
from quorum.testing.stub import OpenAIStub, quorum_env, text_of

AGENT_MARKERS = {
    "planner": "You are the planner",
    "researcher": "You are the researcher",
    "analyst": "You are the analyst",
    "writer": "You are the writer",
    "synthesizer": "You write the final answer",
}


def agent_of(body: dict) -> str:
    system = text_of(body["messages"][0])
    return next((a for a, marker in AGENT_MARKERS.items() if marker in system), "?")


def calls(stub: OpenAIStub) -> Counter[str]:
    return Counter(agent_of(body) for body in stub.chat_bodies())


@pytest.fixture
def stub() -> OpenAIStub:
    with OpenAIStub() as running:
        yield running


def quorum(*args: str, env: dict[str, str], cwd: Path) -> forks.Forked:
    """`quorum ARGS`, forked from a process that has imported Quorum (`quorum.testing.forks`)."""
    return forks.start(
        args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def as_a_user(*args: str, env: dict[str, str], cwd: Path, **popen) -> subprocess.Popen[str]:
    """`python -m quorum.cli ARGS` started as a user starts it: where the start (the entry
    point, its signal handlers) is what is tested."""
    return subprocess.Popen(
        [sys.executable, "-m", "quorum.cli", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


@pytest.mark.crash
def test_sigkilled_run_resumes_without_repeating_finished_steps(
    stub: OpenAIStub, tmp_path: Path
) -> None:
    env = quorum_env(stub, tmp_path)
    held = stub.hold(lambda body: agent_of(body) == "writer")
    run = quorum("run", "orchestrator", "Plan a launch", "--thread", "k1", env=env, cwd=tmp_path)

    assert held.arrived.wait(60), run.communicate(timeout=5)
    # The planner (its thinking, then its plan), the researcher and the analyst (each a tool
    # call, then its answer) finished; the writer's call is in flight when the process dies.
    before = calls(stub)
    assert before == Counter(planner=2, researcher=2, analyst=2, writer=1)
    listed = quorum("threads", "--json", env=env, cwd=tmp_path).communicate(timeout=60)[0]
    assert [(t["thread_id"], t["status"]) for t in json.loads(listed)] == [("k1", "running")]
    busy = quorum("resume", "k1", env=env, cwd=tmp_path)
    _, refused = busy.communicate(timeout=60)
    assert busy.returncode == 3 and "is busy" in refused, refused
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=10)
    held.release()

    threads = quorum("threads", "--json", env=env, cwd=tmp_path).communicate(timeout=60)[0]
    assert [(t["thread_id"], t["status"]) for t in json.loads(threads)] == [("k1", "interrupted")]

    resumed = quorum("resume", "k1", env=env, cwd=tmp_path)
    out, err = resumed.communicate(timeout=60)

    assert resumed.returncode == 0, err
    assert out.strip(), err
    assert "thread k1  status completed" in err
    after = calls(stub) - before
    # Only the step that was cut short, and what follows it, asked the model again.
    assert after == Counter(writer=1, synthesizer=1)


@pytest.mark.slow
def test_python_entry_point_is_the_cli(stub: OpenAIStub, tmp_path: Path) -> None:
    shown = as_a_user("graph", "pipeline", env=quorum_env(stub, tmp_path), cwd=tmp_path)

    out, err = shown.communicate(timeout=60)

    assert shown.returncode == 0, err
    assert "research --> summarize" in out


def _interruptible() -> None:
    # A shell starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT;
    # a user's terminal does not, so give the child the default a terminal would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_says_how_to_resume(stub: OpenAIStub, tmp_path: Path) -> None:
    env = quorum_env(stub, tmp_path)
    held = stub.hold(lambda body: agent_of(body) == "analyst")
    run = as_a_user(
        "run", "orchestrator", "Plan a launch", "--thread", "c1",
        env=env, cwd=tmp_path, preexec_fn=_interruptible,
    )  # fmt: skip
    assert held.arrived.wait(60), run.communicate(timeout=5)

    run.send_signal(signal.SIGINT)
    try:
        out, err = run.communicate(timeout=30)
    finally:
        run.kill()
        run.communicate()
        held.release()

    assert run.returncode == 130
    assert err.strip().endswith("stopped; continue with `quorum resume c1`")
    assert "Traceback" not in err
    resumed = quorum("resume", "c1", env=env, cwd=tmp_path)
    _, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    assert calls(stub)["planner"] == 2  # its thinking and its plan, each asked once


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=str)
@pytest.mark.slow
def test_a_stop_with_workers_in_flight_leaves_the_thread_interrupted(
    stub: OpenAIStub, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    env = quorum_env(stub, tmp_path)
    # Both parallel workers of the default plan are asked, and neither answers yet.
    researcher = stub.hold(lambda body: agent_of(body) == "researcher")
    analyst = stub.hold(lambda body: agent_of(body) == "analyst")
    run = as_a_user(
        "run", "orchestrator", "Plan a launch", "--thread", "w1",
        env=env, cwd=tmp_path, preexec_fn=_interruptible,
    )  # fmt: skip
    try:
        assert researcher.arrived.wait(60) and analyst.arrived.wait(60), run.communicate(timeout=5)
        run.send_signal(sig)
        _, err = run.communicate(timeout=30)
    finally:
        run.kill()
        run.communicate()
        researcher.release()
        analyst.release()

    assert run.returncode == code, err
    assert "Traceback" not in err
    shown = quorum("show", "w1", "--json", env=env, cwd=tmp_path)
    out, _ = shown.communicate(timeout=60)
    thread = json.loads(out)
    # Each worker was cancelled by the stop: neither failed, and the thread is resumable.
    assert (thread["status"], thread["error"]) == ("interrupted", None)
