"""`quorum model serve` for a test module: started on a data folder, stopped when done."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from quorum import embedded
from quorum.settings import Settings

SERVE_TIMEOUT = 300.0
"""Seconds for the server to answer: the default model is joined on its first start."""


@contextmanager
def model_served(folder: Path, env: dict[str, str], settings: Settings) -> Iterator[Path]:
    """Run `quorum model serve` with `env` on `folder` until the block ends.

    `settings` says which model it must be serving before the block starts.
    """
    log = (folder / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "quorum.cli", "model", "serve"],
        env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + SERVE_TIMEOUT
        while embedded.find_running(settings) is None:
            assert server.poll() is None, (folder / "serve.log").read_text()
            assert time.monotonic() < deadline, "quorum model serve did not come up"
            time.sleep(0.5)
        yield folder
    finally:
        server.terminate()
        server.wait(30)
        log.close()
