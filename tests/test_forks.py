"""Forked `quorum` commands (`quorum.testing.forks`) behave as `python -m quorum.cli` does.

Most of the suite's `quorum` processes are forks of a server that has imported Quorum. These
tests hold that to the real thing: the same exit code, stdout and stderr for the same
command; the command's own environment and folder, not the server's; its own session when
asked; a SIGKILL reported as the kernel reports it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quorum.testing import forks
from quorum.testing.stub import OpenAIStub, quorum_env


@pytest.fixture
def stub() -> OpenAIStub:
    with OpenAIStub() as running:
        yield running


def as_a_user(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "quorum.cli", *args],
        env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.slow
def test_a_fork_prints_and_exits_as_the_command_does(stub: OpenAIStub, tmp_path: Path) -> None:
    env = quorum_env(stub, tmp_path)
    # A run first (its thread then listed, shown and refused again), then what each prints.
    ran = forks.run(["run", "react", "What is 6*7?", "--thread", "t1"], env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    commands = [
        ["threads", "--json"],
        ["show", "t1", "--json"],
        ["show", "missing"],
        ["run", "react", "again", "--thread", "t1"],
        ["run", "nosuch", "x"],
        ["graph", "pipeline"],
        ["--help"],
    ]
    for args in commands:
        forked = forks.run(args, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, timeout=120)
        real = as_a_user(args, env, tmp_path)

        assert (forked.returncode, forked.stdout, forked.stderr) == (
            real.returncode,
            real.stdout,
            real.stderr,
        ), args
    listed = forks.run(["threads", "--json"], env=env, cwd=tmp_path, timeout=120).stdout
    assert [thread["thread_id"] for thread in json.loads(listed)] == ["t1"]


def test_each_fork_reads_its_own_environment_and_folder(tmp_path: Path) -> None:
    """The server imported Quorum once; each command's settings are its own."""
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        folder.mkdir()
    code = "import os, sys; from quorum.settings import get_settings; " + (
        "print(os.getcwd(), get_settings().data_dir, sys.argv[1:])"
    )
    printed = [
        forks.run(["a", "b"], code=code, env=os.environ | {"QUORUM_DATA_DIR": str(f)}, cwd=f)
        for f in (one, two)
    ]

    assert [p.stdout.split() for p in printed] == [
        [str(one), str(one), "['a',", "'b']"],
        [str(two), str(two), "['a',", "'b']"],
    ]


def test_a_killed_fork_reports_the_signal_and_leads_its_own_group(tmp_path: Path) -> None:
    sleeper = forks.start(
        [], code="import time; time.sleep(60)", cwd=tmp_path, start_new_session=True
    )
    assert sleeper.poll() is None
    assert os.getpgid(sleeper.pid) == sleeper.pid

    os.killpg(sleeper.pid, signal.SIGKILL)

    assert sleeper.wait(timeout=30) == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        os.kill(sleeper.pid, 0)


def test_a_fork_exits_with_its_code_and_flushes_its_streams(tmp_path: Path) -> None:
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(7)"
    ended = forks.run([], code=code, cwd=tmp_path)

    assert (ended.returncode, ended.stdout, ended.stderr) == (7, "out\n", "err\n")
    failed = forks.run([], code="raise ValueError('boom')", cwd=tmp_path)
    assert failed.returncode == 1
    assert failed.stderr.rstrip().endswith("ValueError: boom")


def test_the_server_outlives_a_caller_that_goes_before_its_fork_ends(tmp_path: Path) -> None:
    """A caller that stops listening (its test ended, say) must not take the server along:
    reporting to its closed connection once broke the server for every later command."""
    orphaned = forks.start([], code="import time; time.sleep(0.3)", cwd=tmp_path)
    orphaned._connection.close()  # as a caller that ends without waiting
    time.sleep(1.0)  # the fork has ended and been reaped

    later = forks.run([], code="print('served')", cwd=tmp_path, timeout=60)

    assert (later.returncode, later.stdout) == (0, "served\n")
