"""`quorum` commands started as forks of a process that has already imported Quorum.

A `quorum` process spends about two seconds of CPU importing LangGraph, LangChain, openai
and pydantic before it does anything; the test suite starts over 500 of them, and on two
cores those imports were over 40% of its time. The fork server (`quorum.testing.fork_server`,
one per process that uses it) imports the CLI once. Each command is then a fork of it that
takes its own argv, environment, working folder and standard streams (passed over a Unix
socket with SCM_RIGHTS), starts a session of its own if asked, runs `python -m quorum.cli` as
the interpreter would (the `__main__` module, non-daemon threads joined, atexit handlers
run) and exits with the CLI's code.

What a test observes is what it would of any process: a pid of its own, its streams, and
its exit status as the kernel reports it (a SIGKILL is -9). `start()` returns a `Forked`,
enough of `subprocess.Popen` for the tests and the crash harness. Tests whose subject is
how a process starts (a terminal, signals, the process tree a run leaves) start
`python -m quorum.cli` with subprocess instead, as a user does.

Hand-written: no library forks a pre-imported interpreter for arbitrary commands with their
own streams and reports the child's raw wait status (multiprocessing's forkserver runs
Python callables, replaces stdin and turns a signal into its own exit code).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

_STREAM_ARGS = ("stdin", "stdout", "stderr")


class ForkServerError(RuntimeError):
    """The fork server could not be started or stopped answering."""


class Forked:
    """A `quorum` command forked by the server: the parts of `subprocess.Popen` tests use."""

    def __init__(
        self,
        connection: socket.socket,
        pid: int,
        args: list[str],
        pipes: dict[str, IO[Any] | None],
        reply: bytes = b"",
    ) -> None:
        self._connection = connection
        self.pid = pid
        self.args = args
        self.stdin: IO[Any] | None = pipes["stdin"]
        self.stdout: IO[Any] | None = pipes["stdout"]
        self.stderr: IO[Any] | None = pipes["stderr"]
        self.returncode: int | None = None
        self._reply = reply  # the server's "exited STATUS" line, as far as it has come

    def poll(self) -> int | None:
        """The exit code if the command has ended (negative: the signal that ended it)."""
        if self.returncode is None:
            self._receive(timeout=0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the command to end; `subprocess.TimeoutExpired` after `timeout` s."""
        if self.returncode is None:
            self._receive(timeout=timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Send `sig` to the command if it still runs."""
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL the command."""
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM the command."""
        self.send_signal(signal.SIGTERM)

    def communicate(
        self, input: str | bytes | None = None, timeout: float | None = None
    ) -> tuple[Any, Any]:
        """Write `input`, read stdout and stderr to their ends, and wait (as Popen does)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        read: dict[str, Any] = {}

        def drain(name: str, stream: IO[Any]) -> None:
            read[name] = stream.read()
            stream.close()

        readers = [
            threading.Thread(target=drain, args=(name, stream), daemon=True)
            for name, stream in (("stdout", self.stdout), ("stderr", self.stderr))
            if stream is not None and not stream.closed
        ]
        for reader in readers:
            reader.start()
        if self.stdin is not None and not self.stdin.closed:
            if input:
                self.stdin.write(input)
            self.stdin.close()
        for reader in readers:
            reader.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return read.get("stdout"), read.get("stderr")

    def __enter__(self) -> Forked:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                stream.close()
        self.wait()

    def _receive(self, timeout: float | None) -> None:
        """Read the server's report of the exit status, if it comes within `timeout` s."""
        self._connection.settimeout(timeout)
        try:
            while not self._reply.endswith(b"\n"):
                chunk = self._connection.recv(64)
                if not chunk:
                    raise ForkServerError(f"the fork server stopped before pid {self.pid} ended")
                self._reply += chunk
        except (TimeoutError, BlockingIOError):
            return
        self.returncode = os.waitstatus_to_exitcode(int(self._reply.split()[1]))
        self._connection.close()


Process = subprocess.Popen[Any] | Forked
"""A command started either way."""


class ForkServer:
    """The server process, started on first use by this process and stopped with it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._path = ""

    def start(
        self,
        args: Sequence[str],
        *,
        code: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stdin: Any = None,
        stdout: Any = None,
        stderr: Any = None,
        text: bool = False,
        start_new_session: bool = False,
    ) -> Forked:
        """Start `quorum ARGS` (what follows `python -m quorum.cli`) as `subprocess.Popen` would.

        With `code`, `python -c CODE ARGS` instead. Each stream is None (this process's),
        `subprocess.PIPE`, `subprocess.DEVNULL`, a file object or a file descriptor.
        """
        path = self._running()
        passed, pipes, theirs = _streams((stdin, stdout, stderr), text=text)
        request = {
            "args": list(args),
            "code": code,
            "env": dict(os.environ if env is None else env),
            "cwd": os.fspath(os.getcwd() if cwd is None else cwd),
            "session": start_new_session,
        }
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.connect(path)
            socket.send_fds(connection, [json.dumps(request).encode()], passed)
        finally:
            for fd in theirs:
                os.close(fd)
        # The fork says "started" once its session, streams, folder and environment are set
        # (as Popen returns once its child has exec'd): a signal to its group lands then.
        reply = b""
        while b"\n" not in reply:
            chunk = connection.recv(64)
            if not chunk:
                raise ForkServerError(f"the fork server did not start `quorum {' '.join(args)}`")
            reply += chunk
        line, _, rest = reply.partition(b"\n")
        kind, value = line.split()
        if kind != b"started":
            connection.close()
            raise ForkServerError(
                f"`quorum {' '.join(args)}` ended before it started (wait status {int(value)}); "
                "its error is on the fork server's stderr"
            )
        command = ["-c", code] if code is not None else ["-m", "quorum.cli"]
        return Forked(connection, int(value), [sys.executable, *command, *args], pipes, rest)

    def stop(self) -> None:
        """Stop the server (commands it started run on to their own end)."""
        with self._lock:
            if self._process is not None:
                self._process.terminate()
                self._process.wait(timeout=30)
                if self._process.stdout is not None:
                    self._process.stdout.close()
                self._process = None
            if self._folder is not None:
                self._folder.cleanup()
                self._folder = None

    def _running(self) -> str:
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                return self._path
            self._folder = tempfile.TemporaryDirectory(prefix="quorum-forks-")
            self._path = os.path.join(self._folder.name, "socket")
            self._process = subprocess.Popen(
                [sys.executable, "-m", "quorum.testing.fork_server", self._path],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
            )
            assert self._process.stdout is not None
            if self._process.stdout.readline() != b"ready\n":
                raise ForkServerError(f"the fork server exited {self._process.wait()}")
            return self._path


def _streams(
    given: tuple[Any, Any, Any], *, text: bool
) -> tuple[list[int], dict[str, IO[Any] | None], list[int]]:
    """What a fork gets as its stdin, stdout and stderr, and what this side keeps.

    Returns the descriptors to pass, this side's ends of new pipes as files, and the
    descriptors to close once passed.
    """
    passed: list[int] = []
    pipes: dict[str, IO[Any] | None] = {}
    theirs: list[int] = []
    for number, (name, stream) in enumerate(zip(_STREAM_ARGS, given, strict=True)):
        fd, mine = _stream(stream, number, reading=name == "stdin")
        passed.append(fd)
        pipes[name] = None
        if mine is not None:
            theirs.append(fd)
            mode = ("w" if name == "stdin" else "r") + ("" if text else "b")
            pipes[name] = open(mine, mode, encoding="utf-8" if text else None)  # noqa: SIM115
        elif stream == subprocess.DEVNULL:
            theirs.append(fd)
    return passed, pipes, theirs


def _stream(given: Any, number: int, *, reading: bool) -> tuple[int, int | None]:
    """The descriptor a fork gets as stream `number`, and this side's end of a new pipe."""
    if given is None:
        return number, None
    if given == subprocess.PIPE:
        read, write = os.pipe()
        return (read, write) if reading else (write, read)
    if given == subprocess.DEVNULL:
        return os.open(os.devnull, os.O_RDONLY if reading else os.O_WRONLY), None
    if isinstance(given, int):
        return given, None
    return given.fileno(), None


SERVER = ForkServer()
start = SERVER.start
atexit.register(SERVER.stop)


def run(
    args: Sequence[str], *, timeout: float | None = None, input: str | None = None, **popen: Any
) -> subprocess.CompletedProcess[str]:
    """`subprocess.run` of `quorum ARGS`, forked, its output captured as text."""
    process = start(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    try:
        out, err = process.communicate(input, timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.wait(), out, err)
