"""The embedded local model: what Quorum runs on when no model endpoint is configured.

llama-cpp-python's OpenAI-compatible server, on a loopback port, serving one of the models of
`quorum.model_files` (Qwen2.5-Coder-1.5B-Instruct by default, SmolLM2-135M-Instruct when
small and fast matters more) or any GGUF file, so a fresh machine with no key and no network
can run every pattern with real answers. One server process is shared by every agent of a
run: it answers one request at a time and queues the rest. A process that needs
it reuses one started by `quorum model serve` (recorded under the data folder) or starts its
own, which dies with it.

"Dies with it" is kept by the kernel, not by exit handlers: the server watches a pipe whose
only write end the starting process holds, and exits when the pipe reports end of file. That
happens when the process ends however it ends (SIGKILL included), whichever of its threads
started the server (`langgraph dev` starts it from a worker thread), whether or not exit
handlers run.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing import parent_process
from pathlib import Path

import httpx

from quorum import model_files
from quorum.errors import ConfigError
from quorum.settings import Settings

HOST = "127.0.0.1"
logger = logging.getLogger(__name__)
STOP_TIMEOUT = 10.0

# The server runs under this instead of `python -m llama_cpp.server`. Each pipe given in argv[1]
# is read by a thread: end of file means every process holding its write end has ended, and
# the server exits at once; a byte means the owner let it go (`quorum model serve`).
_WATCHED = """\
import os, runpy, sys, threading
def watch(fd):
    if not os.read(fd, 1):
        os.write(2, b"quorum: the process that started this server stopped it or ended\\n")
        os._exit(0)
for fd in sys.argv[1].split(","):
    threading.Thread(target=watch, args=(int(fd),), daemon=True).start()
from quorum.llama_server import count_cache_entries_whole, count_streamed_usage
count_streamed_usage()
count_cache_entries_whole()
sys.argv = sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


@dataclass
class EmbeddedServer:
    """A running embedded model server."""

    port: int
    process: subprocess.Popen[bytes] | None
    """The server process, when this process started it."""
    owner_pipe: int | None = None
    """The write end of the pipe the server watches: closing it stops the server."""
    model: str = ""
    """The model name it answers to."""

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL."""
        return f"http://{HOST}:{self.port}/v1"

    def stop(self) -> None:
        """Stop the server if this process started it."""
        self._close_pipe()
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def release(self) -> None:
        """Let the server outlive this process (it no longer watches the pipe)."""
        if self.owner_pipe is not None:
            os.write(self.owner_pipe, b"\0")
            self._close_pipe()

    def _close_pipe(self) -> None:
        if self.owner_pipe is not None:
            os.close(self.owner_pipe)
            self.owner_pipe = None


def model_alias(settings: Settings) -> str:
    """The model name the embedded server answers to: it names the model it serves."""
    if settings.embedded_model_path is not None:
        return settings.embedded_model_path.stem.lower()
    return model_files.MODELS[settings.embedded_model].alias


def model_file(settings: Settings) -> Path:
    """The GGUF file to serve, verified, found without importing the package that ships it.

    The first call for the default model joins its parts into the data folder (a few seconds).
    """
    if settings.embedded_model_path is not None:
        path = settings.embedded_model_path
        if not path.is_file():
            raise ConfigError(
                f"the embedded model file {str(path)!r} does not exist",
                hint="set QUORUM_EMBEDDED_MODEL_PATH to a GGUF file, or QUORUM_BASE_URL "
                "to use a model server instead",
            )
        return path
    model = model_files.MODELS[settings.embedded_model]
    return model_files.locate(model, settings.data_dir / "models")


def _record(settings: Settings) -> Path:
    return settings.data_dir / "embedded-model.json"


def served_model(port: int, timeout: float = 2.0) -> str | None:
    """The model name a server on `port` answers to, if one answers."""
    try:
        reply = httpx.get(f"http://{HOST}:{port}/v1/models", timeout=timeout)
        return str(reply.json()["data"][0]["id"]) if reply.is_success else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError, IndexError):
        return None


def answers(port: int, alias: str | None = None, timeout: float = 2.0) -> bool:
    """Whether a model server answers on `port` (as `alias`, when given)."""
    served = served_model(port, timeout)
    return served is not None and alias in (None, served)


def _served(settings: Settings) -> tuple[int, int, str] | None:
    """Port, process id and model of the server `quorum model serve` started, if it answers."""
    try:
        record = json.loads(_record(settings).read_text())
        port, pid = int(record["port"]), int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    model = served_model(port)
    return (port, pid, model) if model is not None else None


def find_running(settings: Settings, *, any_model: bool = False) -> EmbeddedServer | None:
    """A server started by `quorum model serve` that still answers, if there is one.

    Only one serving the model the settings choose, unless `any_model`.
    """
    served = _served(settings)
    if served is None or not (any_model or served[2] == model_alias(settings)):
        return None
    return EmbeddedServer(served[0], None, model=served[2])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        # As the server binds (uvicorn): connections of an ended server on the port, left in
        # TIME_WAIT, do not keep a new one from listening there.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return True
    return False


def model_options(settings: Settings) -> dict[str, str | int | bool]:
    """How the model is loaded: llama-cpp-python's model settings, by their names."""
    threads = settings.embedded_threads or os.cpu_count() or 1
    options: dict[str, str | int | bool] = {
        "model": str(model_file(settings)),
        "model_alias": model_alias(settings),
        "n_ctx": settings.embedded_context,
        "n_batch": settings.embedded_batch,
        "n_ubatch": settings.embedded_batch,
        # llama-cpp-python generates on half the cores by default; on a small machine the
        # model is the only busy process, so it gets all of them.
        "n_threads": threads,
        "n_threads_batch": threads,
        # The server keeps every evaluated token's logits unless told not to: n_ctx rows of
        # the vocabulary (594 KiB a token for the default model, up to 5 GB at 8k context),
        # and each prompt-cache entry copies them. Quorum asks for no logprobs, and sampling
        # needs only the last row (bench/server_peak.py: 7.9 GB over the main job before).
        "logits_all": False,
        "verbose": False,
    }
    if settings.embedded_model_path is None:
        # Both known models are trained on ChatML. Plain `chatml` passes text through as it is
        # (chatml-function-calling HTML-escapes every message, and the model writes `&#39;`
        # back); grammar-constrained JSON and forced tool choices work with it too. Any other
        # GGUF is served with the chat template in its own metadata.
        options["chat_format"] = "chatml"
    if settings.embedded_cache_bytes:
        # An agent's next turn starts with its previous one: its state is kept, not re-read,
        # even when parallel workers' requests came in between.
        options |= {"cache": True, "cache_type": "ram", "cache_size": settings.embedded_cache_bytes}
    return options


def start(settings: Settings, *, detached: bool = False) -> EmbeddedServer:
    """Start a server and wait until it answers; it ends when this process ends.

    A `detached` server (`quorum model serve`) is recorded once it answers, then let go: it
    outlives this process, and `stop_served` finds it.
    """
    port = settings.embedded_port
    if port and _port_taken(port):
        raise ConfigError(
            f"port {port} for the embedded model is already taken",
            hint="set QUORUM_EMBEDDED_PORT to a free port, or 0 to pick one",
        )
    port = port or _free_port()
    options = model_options(settings)  # finds (or joins) and verifies the file: may fail
    watched, owner = os.pipe()  # neither end is inherited by anything else this process runs
    pipes = [watched]
    supervisor = parent_process()
    if supervisor is not None and not detached:
        # A multiprocessing worker (uvicorn's reload worker under `langgraph dev`) can be
        # orphaned by its supervisor; the server then goes with the supervisor too.
        pipes.append(supervisor.sentinel)
    command = [sys.executable, "-c", _WATCHED, ",".join(map(str, pipes)), "llama_cpp.server"]
    # By default the server ends a streamed reply early as soon as another request waits: with
    # parallel workers on one model, requests must queue instead, each answered in full.
    command += ["--host", HOST, "--port", str(port), "--interrupt_requests", "False"]
    for option, value in options.items():
        command += [f"--{option}", str(value)]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.data_dir / "embedded-model.log"
    try:
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=pipes,
                # llama.cpp's OpenMP threads spin between steps by default; beside any other
                # busy process on a small machine that made replies 20x slower or more.
                env={**os.environ, "OMP_WAIT_POLICY": settings.embedded_wait_policy.upper()},
                # Signals for this process's group (Ctrl-C in a terminal) are this process's to
                # handle; the server follows it through the pipe.
                start_new_session=True,
            )
    except BaseException:
        os.close(owner)
        raise
    finally:
        os.close(watched)
    server = EmbeddedServer(port, process, owner, model=model_alias(settings))
    try:
        _wait_until_it_answers(process, port, settings, log_path)
        if detached:
            _record(settings).write_text(json.dumps({"port": port, "pid": process.pid}))
            server.release()
    except BaseException:  # Ctrl-C included: nothing half-started is left behind
        server.stop()
        raise
    return server


def _wait_until_it_answers(
    process: subprocess.Popen[bytes], port: int, settings: Settings, log_path: Path
) -> None:
    deadline = time.monotonic() + settings.embedded_start_timeout
    while not answers(port, model_alias(settings), timeout=1.0):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise ConfigError(
                f"the embedded model server did not start: {' | '.join(tail) or 'no output'}",
                hint=f"see {log_path}; or set QUORUM_BASE_URL to use a model server",
            )
        time.sleep(0.2)


_lock = threading.Lock()
_owned: EmbeddedServer | None = None


def ensure_server(settings: Settings) -> EmbeddedServer:
    """A running server: this process's own, one from `quorum model serve`, or a new one."""
    global _owned
    with _lock:
        if _owned is not None:
            if _owned.process is not None and _owned.process.poll() is None:
                return _owned
            return _restart(settings)[0]
        running = find_running(settings)
        if running is not None:
            return running
        _owned = start(settings)
        atexit.register(stop_owned)
        return _owned


def restart_if_ended(settings: Settings) -> str | None:
    """Start this process's server again if it has ended; what happened, or None if it runs.

    The model seam calls it before retrying a failed call: a server the kernel killed (out of
    memory, say) is back for the next attempt, on the same port, so every client already
    built for it reaches it again. A server of `quorum model serve` is its owner's to restart.
    """
    with _lock:
        if _owned is None or _owned.process is None or _owned.process.poll() is None:
            return None
        return _restart(settings)[1]


def _restart(settings: Settings) -> tuple[EmbeddedServer, str]:
    """Replace this process's ended server with a new one on its port (under `_lock`)."""
    global _owned
    assert _owned is not None and _owned.process is not None
    ended = _how_it_ended(_owned.process.returncode)
    _owned.stop()  # let go of its pipe
    port, _owned = _owned.port, None
    _owned = start(settings.model_copy(update={"embedded_port": port}))
    said = f"the embedded model server had {ended}; restarted it on port {port}"
    logger.warning(said)
    return _owned, said


def _how_it_ended(code: int) -> str:
    if code == -signal.SIGKILL:
        # What the kernel's out-of-memory killer sends; `dmesg` names it if so.
        return "been killed (SIGKILL: out of memory?)"
    if code < 0:
        return f"been stopped by {signal.Signals(-code).name}"
    return f"exited with code {code} (see embedded-model.log in the data folder)"


def stop_owned() -> None:
    """Stop the server this process started, if any."""
    global _owned
    with _lock:
        if _owned is not None:
            _owned.stop()
            _owned = None


def forget(settings: Settings) -> None:
    """Remove the record of a served model (after `quorum model serve` stops)."""
    _record(settings).unlink(missing_ok=True)


def stop_served(settings: Settings) -> EmbeddedServer | None:
    """Stop the server `quorum model serve` started, from any process; None if none runs."""
    served = _served(settings)
    if served is None:
        forget(settings)  # a stale record, if any
        return None
    port, pid, model = served
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:  # it ended meanwhile
        pass
    deadline = time.monotonic() + STOP_TIMEOUT
    while answers(port, timeout=0.5):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    forget(settings)
    return EmbeddedServer(port, None, model=model)
