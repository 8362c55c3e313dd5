"""The embedded model server never outlives what started it, however that ends.

Each test starts a real owner (the `quorum` command, a program using the Python API,
`langgraph dev` with and without its reloader), lets it start the embedded model by running
the ReAct graph, ends the owner, and looks for the server in the process table, never in
Quorum's own records. Only `quorum model serve` keeps a server past its own end, and only
when it is killed outright; `quorum model stop` finds that one.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from langgraph_sdk import get_client

from quorum.testing.langgraph_dev import RUN_TIMEOUT, langgraph_dev
from quorum.testing.stub import isolated_environ
from tests.processes import (
    LLAMA_SERVER,
    Process,
    descendants,
    kill,
    llama_servers,
    table,
    wait_for_none,
)

pytestmark = pytest.mark.embedded

GONE_WITHIN = 5.0  # the issue saw the server still running 5 s after its owner ended
START_TIMEOUT = 90.0
QUESTION = "What is 6 times 7?"
SMALL_MODEL, SMALL_ALIAS = "smollm2-135m", "smollm2-135m-instruct"


@pytest.fixture(autouse=True)
def nothing_left_by_the_test() -> Iterator[None]:
    """Each test ends everything it started, so a leftover is blamed on the right test.

    What ran before the test (PostgreSQL the session started for earlier tests) is not its.
    """
    before = {process.pid for process in descendants()}
    yield

    def started_by_the_test() -> list:
        return [process for process in descendants() if process.pid not in before]

    left = wait_for_none(started_by_the_test, 30)
    kill(left)
    assert not left, "left running: " + "; ".join(map(str, left))


def quorum_env(data_dir: Path) -> dict[str, str]:
    """No endpoint configured: Quorum runs on the embedded model, kept under `data_dir`."""
    env = isolated_environ()
    return env | {
        "QUORUM_DATA_DIR": str(data_dir),
        "QUORUM_EMBEDDED_MODEL": SMALL_MODEL,  # lifetimes, not answers, are tested here
        "LANGSMITH_TRACING": "false",
    }


def _terminal_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored, and a child keeps an ignored
    # SIGINT; give the child the default a terminal would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args: list[str], data_dir: Path, **kwargs) -> subprocess.Popen[str]:
    """A Python process started the way a user would, on the embedded model."""
    return subprocess.Popen(
        [sys.executable, *args],
        env=quorum_env(data_dir),
        cwd=data_dir.parent,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_terminal_sigint,
        **kwargs,
    )


def wait_for_server(owner: int, alive: subprocess.Popen[str] | None = None) -> list[Process]:
    """The model server(s) below process `owner`, once one is up."""
    deadline = time.monotonic() + START_TIMEOUT
    while not (servers := llama_servers(owner)):
        assert alive is None or alive.poll() is None, alive.communicate(timeout=10)
        assert time.monotonic() < deadline, "no embedded model server was started"
        time.sleep(0.1)
    return servers


def assert_gone(servers: list[Process], owner: str) -> None:
    """None of `servers`, nor any other model server this session started, is still alive."""
    pids = {server.pid for server in servers}

    def running() -> list[Process]:
        # Below pytest, and `servers` wherever they were re-parented. An exiting process has
        # an empty command line once its memory is released: that one is gone.
        seen = [p for p in table().values() if p.pid in pids and LLAMA_SERVER in p.command]
        return list({p.pid: p for p in [*llama_servers(), *seen] if p.alive}.values())

    left = wait_for_none(running, GONE_WITHIN)
    assert not left, f"{owner}: model server still running {GONE_WITHIN:.0f} s later: {left}"


# --- the command line ---------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=str)
def test_quorum_run_ended_by_a_signal_takes_its_server_along(
    tmp_path: Path, sig: signal.Signals
) -> None:
    run = start(["-m", "quorum.cli", "run", "react", QUESTION], tmp_path / "data")
    servers = wait_for_server(run.pid, run)

    run.send_signal(sig)
    run.communicate(timeout=30)

    assert run.returncode != 0
    assert_gone(servers, f"quorum run ended by {sig.name}")


def test_quorum_run_that_finishes_takes_its_server_along(tmp_path: Path) -> None:
    run = start(
        ["-m", "quorum.cli", "run", "react", QUESTION, "--set", "max_steps=1"], tmp_path / "data"
    )
    servers = wait_for_server(run.pid, run)

    _, err = run.communicate(timeout=300)

    # One step: the small model answers (0) or reaches the step limit (4); either way the
    # run ended on its own.
    assert (run.returncode, "status completed" in err) in ((0, True), (4, False)), err
    assert "status step_limit" in err or run.returncode == 0
    assert_gone(servers, "quorum run that finished")


# --- the Python API -----------------------------------------------------------------------

PROGRAM = f"""
import asyncio, sys
import quorum

thread = asyncio.run(
    quorum.run("react", {QUESTION!r}, context=quorum.QuorumContext(max_steps=1))
)
print(thread.status, flush=True)
ending = sys.stdin.readline().strip()  # the loop is closed; the test says how to end
if ending == "raise":
    raise RuntimeError("the program fails after its run")
"""


@pytest.mark.parametrize("ending", ["return", "raise", "SIGKILL"])
def test_python_api_server_ends_with_the_program_after_its_loop_closed(
    tmp_path: Path, ending: str
) -> None:
    program = start(["-c", PROGRAM], tmp_path / "data")
    servers = wait_for_server(program.pid, program)
    assert program.stdout is not None and program.stdin is not None
    ended = program.stdout.readline().strip()
    assert ended in ("completed", "step_limit"), program.communicate(timeout=10)

    # asyncio.run closed its loop and joined the worker thread that started the server: the
    # server belongs to the program, not to that thread, so later runs can reuse it.
    assert [p.pid for p in llama_servers(program.pid)] == [p.pid for p in servers]
    if ending == "SIGKILL":
        program.kill()
        program.communicate(timeout=30)
    else:
        _, err = program.communicate(f"{ending}\n", timeout=30)
        assert (program.returncode, "RuntimeError" in err) == (
            (1, True) if ending == "raise" else (0, False)
        ), err

    assert_gone(servers, f"Python API program ending by {ending}")


# --- langgraph dev ------------------------------------------------------------------------


@pytest.mark.parametrize("reload", [False, True], ids=["no-reload", "reload"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=str)
async def test_langgraph_dev_stopped_by_a_signal_takes_its_server_along(
    tmp_path: Path, sig: signal.Signals, reload: bool
) -> None:
    """Only `langgraph dev` itself gets the signal, as from `kill PID`, not its group."""
    settings = {"QUORUM_DATA_DIR": str(tmp_path / "data"), "QUORUM_EMBEDDED_MODEL": SMALL_MODEL}
    with langgraph_dev(tmp_path, settings, reload=reload) as served:
        assert served.process is not None
        async with get_client(url=served.url, api_key=None, timeout=RUN_TIMEOUT * 5) as client:
            thread = await client.threads.create()
            run = await client.runs.create(
                thread["thread_id"], "react", input={"input": QUESTION}, context={"max_steps": 1}
            )
            servers = wait_for_server(served.process.pid)
            # SIGTERM as the issue found it, after the run; SIGKILL while the model answers.
            if sig == signal.SIGTERM:
                await client.runs.join(thread["thread_id"], run["run_id"])
                finished = await client.runs.get(thread["thread_id"], run["run_id"])
                assert finished["status"] == "success", served.log_text()

        served.process.send_signal(sig)
        served.process.wait(timeout=60)

        # With the reloader, uvicorn's worker outlives its killed supervisor (the teardown
        # ends it); the model server goes with the supervisor all the same.
        assert_gone(servers, f"langgraph dev ({'reload' if reload else 'no reload'}) {sig.name}")


# --- quorum model serve / status / stop ---------------------------------------------------


def model(command: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quorum.cli", "model", command],
        env=quorum_env(data_dir), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def serve(data_dir: Path) -> tuple[subprocess.Popen[str], list[Process]]:
    """`quorum model serve`, once it says it is serving."""
    served = start(["-m", "quorum.cli", "model", "serve"], data_dir, start_new_session=True)
    assert served.stderr is not None
    line = served.stderr.readline()
    assert f"serving {SMALL_ALIAS} at" in line, line + served.communicate(timeout=10)[1]
    return served, llama_servers(served.pid)


def test_model_stop_stops_the_served_model(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    served, servers = serve(data_dir)
    assert len(servers) == 1
    assert model("status", data_dir).stdout.startswith(
        f"running {SMALL_ALIAS} at http://127.0.0.1:"
    )

    stopped = model("stop", data_dir)

    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith("stopped the model at http://127.0.0.1:")
    served.communicate(timeout=30)
    assert served.returncode == 0
    assert_gone(servers, "quorum model stop")
    assert model("status", data_dir).stdout.strip() == "not running"
    again = model("stop", data_dir)
    assert (again.returncode, again.stdout.strip()) == (0, "no served model to stop")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=str)
def test_model_serve_stopped_like_a_service_stops_its_server(
    tmp_path: Path, sig: signal.Signals
) -> None:
    data_dir = tmp_path / "data"
    served, servers = serve(data_dir)

    served.send_signal(sig)
    served.communicate(timeout=30)

    assert served.returncode == 0
    assert_gone(servers, f"quorum model serve ended by {sig.name}")
    assert model("status", data_dir).stdout.strip() == "not running"


def test_a_served_model_outlives_a_killed_serve_until_model_stop(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    served, servers = serve(data_dir)

    served.kill()
    served.communicate(timeout=30)
    time.sleep(1)  # it would be gone by now if it followed its starter

    assert [p.pid for p in llama_servers()] == [s.pid for s in servers]
    assert model("status", data_dir).stdout.startswith(f"running {SMALL_ALIAS} at")
    assert model("stop", data_dir).stdout.startswith("stopped the model at")
    assert_gone(servers, "quorum model stop after a killed serve")
