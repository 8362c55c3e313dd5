"""Record a command's terminal session as an asciicast (v2): what `asciinema play` replays.

    .venv/bin/python scripts/record.py docs/streamed-answer.cast -- quorum run orchestrator "..."

The command runs on a pseudo-terminal (stdout and stderr both, as a person would see them),
and every chunk it writes is kept with the time it came. Written by hand: a recorder is
twenty lines over `pty`, and asciinema itself is not in the lock.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path


def record(target: Path, command: list[str], width: int = 100, height: int = 30) -> int:
    """Run `command` on a pseudo-terminal, write its session to `target`, return its code."""
    reader, writer = pty.openpty()
    os.set_blocking(reader, True)
    env = os.environ | {"COLUMNS": str(width), "LINES": str(height), "TERM": "xterm-256color"}
    started = time.monotonic()
    process = subprocess.Popen(command, stdin=writer, stdout=writer, stderr=writer, env=env)
    os.close(writer)
    events = []
    while True:
        try:
            data = os.read(reader, 4096)
        except OSError:  # the other side closed
            break
        if not data:
            break
        events.append([round(time.monotonic() - started, 3), "o", data.decode(errors="replace")])
    os.close(reader)
    code = process.wait()
    header = {"version": 2, "width": width, "height": height, "timestamp": int(time.time())}
    header["title"] = " ".join(command)
    lines = [json.dumps(header)] + [json.dumps(event) for event in events]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines) + "\n")
    return code


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: record.py FILE.cast -- COMMAND [ARGS...]")
    sys.exit(record(Path(sys.argv[1]), sys.argv[3:]))
