"""An embedded model server that dies (the kernel's OOM killer) is started again, and said.

The server is killed from outside with SIGKILL, as the kernel would; what is checked is seen
from outside too: a new server process on the same port, the call or run that follows
answered, and the failed attempt in the call's record.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from quorum import embedded, journal
from quorum.context import QuorumContext
from quorum.models import load_chat_model
from quorum.models.call import _request
from quorum.settings import get_settings
from tests.processes import llama_servers
from tests.test_embedded_lifetime import QUESTION, start, wait_for_server

pytestmark = pytest.mark.embedded


def _sigkill(process: subprocess.Popen[bytes] | None) -> int:
    assert process is not None
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    return process.pid


async def test_a_call_whose_server_was_killed_is_answered_by_a_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QUORUM_EMBEDDED_MODEL", "smollm2-135m")
    monkeypatch.setenv("QUORUM_RETRY_WAIT", "0.1")
    get_settings.cache_clear()
    try:
        first = embedded.ensure_server(get_settings())
        model = await load_chat_model("solver", QuorumContext())
        killed = _sigkill(first.process)

        record = journal.CallRecord(agent="solver", model=first.model)
        record = await _request(model, [HumanMessage(QUESTION)], record, None, None, {})

        (server,) = llama_servers()
        assert server.pid != killed
        assert embedded.answers(first.port, first.model)  # the same port: clients kept working
        assert record.reply is not None and record.attempts == 2
        (failed,) = record.errors
        assert "connection failed" in failed
        assert f"had been killed (SIGKILL: out of memory?); restarted it on port {first.port}" in (
            failed
        )
    finally:
        embedded.stop_owned()


def _exiting(pid: int) -> bool:
    """Whether the kernel still tears `pid` down: after SIGKILL its threads end one by one
    (freeing the model's memory), and only then can its parent learn that it ended."""
    task = Path(f"/proc/{pid}/task")
    return task.exists() and len(list(task.iterdir())) > 1


PROGRAM = f"""
import asyncio, sys
import quorum

async def main():
    context = quorum.QuorumContext(max_steps=1)
    first = await quorum.run("react", {QUESTION!r}, context=context)
    print(first.status, flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the test kills the server meanwhile
    second = await quorum.run("react", {QUESTION!r}, context=context)
    print(second.status, flush=True)

asyncio.run(main())
"""


def test_a_run_after_its_server_was_killed_starts_it_again(tmp_path: Path) -> None:
    """Between two runs of one program (one event loop, one cached client) the server dies."""
    program = start(["-c", PROGRAM], tmp_path / "data")
    try:
        (server,) = wait_for_server(program.pid, program)
        assert program.stdout is not None and program.stdin is not None
        assert program.stdout.readline().strip() in ("completed", "step_limit")
        os.kill(server.pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while _exiting(server.pid) and time.monotonic() < deadline:
            time.sleep(0.05)

        out, err = program.communicate("go\n", timeout=300)
    finally:
        program.kill()

    assert program.returncode == 0, err
    assert out.strip() in ("completed", "step_limit"), err
    assert "the embedded model server had been killed (SIGKILL: out of memory?)" in err
    assert "cannot reach" not in err
