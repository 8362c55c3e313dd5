"""The `quorum` command line: run a pattern, resume a thread, list and inspect threads.

Progress goes to stderr while a run works (a live display of the agents running, steps done,
tokens, cost and budget used in a terminal; plain lines when piped), then the thread's
ledger; the answer goes to stdout, so `quorum run ... > answer.md` keeps only the answer.
Exit codes: 0 completed; 1 failed (an agent raised: fix the cause, then resume); 2 bad
input (one line, nothing saved); 3 the thread is busy in another run; 4 a budget or the step
limit ran out (resume with `--set` to give more); 5 the thread waits for a person (approve
a tool call with `quorum approve`, settle an effect with `quorum resolve`). Ctrl-C (130) and
SIGTERM (143) stop a run cleanly: every finished step is kept, and the message names the
thread to resume. In a terminal, `run` and `resume` ask for approvals on the spot.

Conventions: `--version`, `-h`/`--help`, shell completion (`--install-completion`), `--json`
for scripts. Colour only in a terminal and never with NO_COLOR set; piped or redirected,
nothing is cut or wrapped to a terminal's width.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType


def _stopped_while_starting(signum: int, frame: FrameType | None) -> None:
    # Loading LangGraph, LangChain and openai takes seconds, and nothing has run or been saved
    # yet: a stop now is said in one line, not a traceback from inside an import.
    sys.stderr.write(f"stopped ({signal.Signals(signum).name}) while starting: nothing was run\n")
    os._exit(128 + signum)


_AT_START = {
    stop: signal.signal(stop, _stopped_while_starting)
    for stop in (signal.SIGTERM, signal.SIGINT)
    if threading.current_thread() is threading.main_thread()
}

# The slow part: the commands load LangGraph, LangChain and openai. Each module registers its
# commands on the app, in the order `quorum --help` lists them.
# isort: off
from quorum.cli import running, browse, admin, evaluate  # noqa: F401
from quorum.cli.shell import EXIT_CODES, app

# isort: on

__all__ = ["EXIT_CODES", "app"]

for stop, handler in _AT_START.items():
    signal.signal(stop, handler)  # loaded: stops are handled as before (see `shell._run_async`)
