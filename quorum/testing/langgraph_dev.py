"""Start `langgraph dev` for a test or a bench, and leave nothing running after it.

The checkout's langgraph.json, on a loopback port, with a clean environment. It serves the
graphs of the Quorum checkout this module is in (`REPO`), so it is for Quorum's own tests and
benches, run from a checkout; both import it from here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
"""The checkout: the folder of langgraph.json and the `quorum` package."""
READY_TIMEOUT = 90.0
RUN_TIMEOUT = 60.0
# Variables that could point the server at a real endpoint, trace store or proxy.
FOREIGN_PREFIXES = ("QUORUM_", "OPENAI_", "LANGSMITH_", "LANGCHAIN_", "LANGGRAPH_", "OTEL_")
PROXIES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


@dataclass
class Served:
    """A running `langgraph dev` and what it talks to."""

    url: str
    database: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    """`langgraph dev` itself (with reload, the supervisor of the worker that runs graphs)."""

    def log_text(self, containing: str = "") -> str:
        """The server's output so far (the lines `containing` a text), for failure messages."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        lines = re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines()
        return "\n".join(line for line in lines if containing in line)[-20_000:]

    def checkpoint_count(self, thread_id: str) -> int:
        """Top-level checkpoints of `thread_id` in the SQLite file, read past the server."""
        uri = f"file:{self.database}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as db:
            query = "SELECT COUNT(*) FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ''"
            return int(db.execute(query, (thread_id,)).fetchone()[0])


def _absolute(spec: str) -> str:
    """A langgraph.json path spec ('./pkg/mod.py:attr' or '.') made absolute to the repo."""
    if not spec.startswith("."):
        return spec  # a module path such as quorum.checkpoints.open_checkpointer
    path, _, attribute = spec.partition(":")
    absolute = str((REPO / path).resolve())
    return f"{absolute}:{attribute}" if attribute else absolute


def server_config(folder: Path) -> Path:
    """The repo's langgraph.json, to be served from `folder` instead of the repo root.

    The in-memory runtime keeps its threads and runs in ./.langgraph_api of its working
    directory and re-queues runs it finds unfinished there, and langgraph.json's `.env` is
    loaded over the process environment; run from the repo root, the test would share both
    with a developer's own `langgraph dev`. So the graphs, dependencies and checkpointer are
    the repo's, made absolute, and the environment comes only from this test.
    """
    config = json.loads((REPO / "langgraph.json").read_text())
    config["graphs"] = {name: _absolute(spec) for name, spec in config["graphs"].items()}
    config["dependencies"] = [_absolute(dep) for dep in config.get("dependencies", [])]
    if "checkpointer" in config:
        config["checkpointer"]["path"] = _absolute(config["checkpointer"]["path"])
    config["env"] = {}
    path = folder / "langgraph.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def stub_settings(stub_url: str, data: Path | None = None) -> dict[str, str]:
    """The settings of a server whose model is the scripted stub at `stub_url`."""
    settings = {
        "QUORUM_BASE_URL": stub_url,
        "QUORUM_API_KEY": "test",
        "QUORUM_MODEL": "stub-model",
        "QUORUM_MAX_ATTEMPTS": "1",
    }
    return settings | ({"QUORUM_DATA_DIR": str(data)} if data is not None else {})


def server_env(settings: dict[str, str]) -> dict[str, str]:
    """A server environment with Quorum `settings` only, and nothing phoning home."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith(FOREIGN_PREFIXES) and name.lower() not in PROXIES
    }
    return (
        env
        | settings
        | {
            "LANGSMITH_TRACING": "false",
            # langgraph-cli posts each command to its analytics endpoint unless this is "1".
            "LANGGRAPH_CLI_NO_ANALYTICS": "1",
            # langgraph-api asks PyPI for newer releases at startup unless this is set.
            "LANGGRAPH_NO_VERSION_CHECK": "true",
            "NO_PROXY": "127.0.0.1,localhost",
            "NO_COLOR": "1",
        }
    )


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_ready(served: Served, process: subprocess.Popen[bytes]) -> None:
    """Poll /ok until the server answers; fail with its log if it dies or takes too long."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"langgraph dev exited with {process.returncode} before it was ready\n"
                f"--- server log ---\n{served.log_text()}"
            )
        try:
            if httpx.get(f"{served.url}/ok", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError(
        f"langgraph dev was not ready after {READY_TIMEOUT:.0f} s\n"
        f"--- server log ---\n{served.log_text()}"
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    """End the server and every process it started."""
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def langgraph_dev(
    folder: Path, settings: dict[str, str], *, reload: bool = False
) -> Iterator[Served]:
    """`langgraph dev` serving Quorum's graphs from `folder`, with Quorum `settings`.

    With `reload` it runs as a user's does: a supervisor process and a worker it spawns.
    """
    cli = Path(sys.executable).with_name("langgraph")
    assert cli.exists(), f"{cli} is missing: install quorum[server]"
    port = free_port()
    database = Path(settings.get("QUORUM_DATABASE", folder / "studio.db"))
    served = Served(f"http://127.0.0.1:{port}", database, folder / "server.log")
    command = [
        str(cli), "dev", "--port", str(port), "--host", "127.0.0.1", "--no-browser",
        "--config", str(server_config(folder)),
    ]  # fmt: skip
    if not reload:
        command.append("--no-reload")
    with served.log.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=folder,
            env=server_env({"QUORUM_DATABASE": str(database), **settings}),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so teardown ends it all
        )
    served.process = process
    try:
        wait_until_ready(served, process)
        yield served
    finally:
        stop(process)
