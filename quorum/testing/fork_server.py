"""The fork server of `quorum.testing.forks`: `python -m quorum.testing.fork_server SOCKET`.

It imports the CLI once, then forks a command for each request on the socket: the fork sets
its session, streams, folder and environment, says "started PID", and runs `python -m
quorum.cli` (or `-c CODE`) as the interpreter would; the server reports "exited STATUS" (the
raw wait status) on the same connection when it reaps it.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import select
import signal
import socket
import sys
import threading
import traceback
from typing import Any

PRELOAD = ("quorum.cli", "langchain_openai")
"""What the server imports before it forks: the CLI, and the model client a run imports on
its first model (1.6 s of openai's types)."""
STREAMS = 3
"""stdin, stdout and stderr, passed with each request."""


def serve(path: str) -> None:
    """Import the CLI, then fork a command for each request on the socket at `path`."""
    for module in PRELOAD:
        __import__(module)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    # A child's end wakes the loop through the signal's wakeup descriptor.
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    waiting: dict[int, socket.socket] = {}
    print("ready", flush=True)
    while True:
        ready, _, _ = select.select([listener.fileno(), wake_read], [], [])
        if wake_read in ready:
            try:
                while os.read(wake_read, 512):
                    pass
            except BlockingIOError:
                pass  # drained
        while waiting:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            connection = waiting.pop(pid, None)
            if connection is not None:
                try:
                    connection.sendall(f"exited {status}\n".encode())
                except OSError:
                    pass  # its caller is gone (closed, or its test ended): no one to tell
                connection.close()
        if listener.fileno() in ready:
            connection, _ = listener.accept()
            message, fds, _, _ = socket.recv_fds(connection, 1 << 20, STREAMS)
            if not message:  # its caller went before it asked: nothing to start
                connection.close()
                continue
            request = json.loads(message)
            pid = os.fork()
            if pid == 0:
                listener.close()
                for other in waiting.values():
                    other.close()
                os.close(wake_read)
                os.close(wake_write)
                _child(request, fds, connection)  # never returns
            for fd in fds:
                os.close(fd)
            waiting[pid] = connection


def _child(request: dict[str, Any], fds: list[int], connection: socket.socket) -> None:
    """Become `python -m quorum.cli ARGS` (or `-c CODE ARGS`) as the request says."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if request["session"]:
            os.setsid()
        for number, fd in enumerate(fds):
            os.dup2(fd, number)
        for fd in set(fds) - {0, 1, 2}:
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        from quorum.settings import get_settings

        get_settings.cache_clear()  # read from the command's environment, not the server's
        connection.sendall(f"started {os.getpid()}\n".encode())
        connection.close()
        try:
            if request["code"] is not None:
                sys.argv = ["-c", *request["args"]]
                main = {"__name__": "__main__", "__builtins__": __builtins__}
                exec(compile(request["code"], "<string>", "exec"), main)
            else:
                sys.argv = [sys.executable, *request["args"]]  # runpy sets [0] as `-m` does
                runpy.run_module("quorum.cli", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as ended:
            if ended.code is None or isinstance(ended.code, int):
                code = ended.code or 0
            else:
                print(ended.code, file=sys.stderr)
        except KeyboardInterrupt:
            # As the interpreter ends on an uncaught Ctrl-C: by the signal itself.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        except BaseException:
            traceback.print_exc()
        threading._shutdown()  # type: ignore[attr-defined]  # as the interpreter's exit does
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()  # before it started (its folder gone, say): said, exit 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass  # a reader gone, as at any process's end
        os._exit(code)


if __name__ == "__main__":
    serve(sys.argv[1])
