"""The process table, read from /proc: what a test, or the whole session, left running.

The session makes the pytest process a child subreaper (Linux's PR_SET_CHILD_SUBREAPER), so
a process whose parent ends is re-parented to pytest instead of to init: everything the suite
started stays a descendant of pytest, however its parents ended, and can be found here.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

PR_SET_CHILD_SUBREAPER = 36
LLAMA_SERVER = "llama_cpp.server"


@dataclass(frozen=True)
class Process:
    """One entry of the process table."""

    pid: int
    ppid: int
    name: str
    state: str
    command: str

    @property
    def alive(self) -> bool:
        """Running, sleeping or stopped; an ended process waiting to be reaped is not."""
        return self.state not in ("Z", "X")

    def __str__(self) -> str:
        return f"{self.pid} {self.command[:300]}"


def become_subreaper() -> None:
    """Adopt every orphaned descendant of this process (instead of init adopting it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def table() -> dict[int, Process]:
    """Every process on the machine, by pid."""
    processes = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                # "pid (name) state ppid ...": the name may hold spaces and parentheses.
                head, _, tail = stat.read().rpartition(b")")
                fields = tail.split()
            with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # it ended while we looked
            continue
        pid = int(entry.name)
        name = head.partition(b"(")[2].decode(errors="replace")
        processes[pid] = Process(pid, int(fields[1]), name, fields[0].decode(), command)
    return processes


def descendants(pid: int | None = None) -> list[Process]:
    """The living processes below `pid` (this process by default)."""
    processes = table()
    children: dict[int, list[Process]] = {}
    for process in processes.values():
        children.setdefault(process.ppid, []).append(process)
    found, todo = [], [os.getpid() if pid is None else pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child.pid)
    return [process for process in found if process.alive]


def llama_servers(pid: int | None = None) -> list[Process]:
    """The embedded model servers below `pid` (this process by default)."""
    return [process for process in descendants(pid) if LLAMA_SERVER in process.command]


def wait_for_none(find: Callable[[], list[Process]], timeout: float) -> list[Process]:
    """Poll `find()` until it returns no process or `timeout` passes; what is left."""
    deadline = time.monotonic() + timeout
    while (left := find()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def kill(processes: list[Process]) -> None:
    """SIGKILL `processes`, so a test that found them left over does not leave them too."""
    for process in processes:
        try:
            os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def postgres_env() -> dict[str, str]:
    """The environment `.ci/postgres` starts (and stops) this worker's own server with."""
    port, folder = postgres_server()
    return os.environ | {"QUORUM_TEST_PG_PORT": str(port), "QUORUM_TEST_PG_DIR": folder}


@functools.cache
def postgres_server() -> tuple[int, str]:
    """This process's server: a free loopback port and a folder named after the process.

    Named per process, not per xdist worker: two suites on one machine (a fast lane beside a
    full run, or CI beside a developer) each have gw0, and sharing its folder and port let
    one suite's start remove the folder of the other's running server.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return port, os.path.join(tempfile.gettempdir(), f"quorum-test-postgres-{os.getpid()}")
