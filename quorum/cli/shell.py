"""What every command shares: the app, consoles, options, stops, errors, JSON and tables.

The Typer app and its callback, the two consoles (stdout for answers, stderr for the rest),
the options several commands take, running a coroutine with Ctrl-C and SIGTERM handled,
the one-line error and its exit code, and a thread as JSON or its ledger as a table.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
from collections.abc import Coroutine
from importlib.metadata import version as package_version
from types import FrameType
from typing import Annotated, Any, NoReturn, TextIO, TypeVar

import typer
from pydantic_core import to_jsonable_python
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from quorum import Ledger, LedgerRow
from quorum.context import QuorumContext
from quorum.errors import QuorumError, UsageError
from quorum.graphs import PATTERNS
from quorum.threads import ThreadInfo

app = typer.Typer(
    name="quorum",
    help="Run multi-agent patterns on durable, resumable threads.",
    epilog="Exit codes: 0 completed; 1 failed or interrupted; 2 bad input; 3 thread busy; "
    "4 budget or step limit reached (resume --set gives more); 5 waiting for a person "
    "(quorum approve / quorum resolve); 130 Ctrl-C; 143 SIGTERM.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)

# Piped or redirected, rich would lay text out for 80 columns: tables would cut dates and
# answers short. Off a terminal the width is practically unbounded (rich sends no colour
# there, and honours NO_COLOR everywhere).
UNBOUNDED_WIDTH = 1_000_000


def _console(stream: TextIO, *, stderr: bool = False) -> Console:
    width = None if stream.isatty() else UNBOUNDED_WIDTH
    console = Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)
    if console.no_color:
        # Rich reads NO_COLOR but still sends bold and dim: with it set, send no escapes at all.
        console = Console(
            stderr=stderr, highlight=False, soft_wrap=True, width=width, color_system=None
        )
    return console


err = _console(sys.stderr, stderr=True)
out = _console(sys.stdout)  # answers are piped: never re-wrap them

PATTERN_HELP = f"Which pattern: {', '.join(PATTERNS)}."


def _patterns(incomplete: str) -> list[str]:
    """Shell completion of a pattern's name."""
    return [name for name in PATTERNS if name.startswith(incomplete)]


PatternArgument = Annotated[str, typer.Argument(help=PATTERN_HELP, autocompletion=_patterns)]

DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Checkpoint store: SQLite file or postgresql:// URL.",
        show_default="QUORUM_DATABASE, else quorum.db in the data folder",
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the thread as JSON on stdout instead of the answer.")
]
StreamOption = Annotated[
    bool,
    typer.Option(
        "--stream/--no-stream",
        help="Print the answer on stdout as it is written (piped: a line at a time); "
        "--no-stream prints it whole at the end.",
    ),
]
VerboseOption = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="Also stream every agent's replies on stderr."),
]


def _show_version(wanted: bool) -> None:
    if wanted:
        out.print(f"quorum {package_version('quorum')}", markup=False)
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_show_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Run multi-agent patterns on durable, resumable threads."""


T = TypeVar("T")


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated()


def _run_async(coroutine: Coroutine[Any, Any, T], *, thread: str | None = None) -> T:
    # A service manager, a container runtime or `kill` stops a run with SIGTERM: stop it
    # as cleanly as Ctrl-C. While the event loop runs, SIGTERM cancels the run's task, as
    # asyncio does for Ctrl-C, so every agent stops at an await and LangGraph keeps every
    # finished step; raised from a signal handler instead, it could land inside a task's
    # cancel scope and fail that agent. Outside the loop it stops the command at once.
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if on_main else None
    terminated = False

    async def stoppable() -> T:
        task = asyncio.current_task()
        assert task is not None

        def terminate() -> None:
            nonlocal terminated
            terminated = True
            task.cancel()

        loop = asyncio.get_running_loop()
        if on_main:
            loop.add_signal_handler(signal.SIGTERM, terminate)
        try:
            return await coroutine
        finally:
            if on_main:
                loop.remove_signal_handler(signal.SIGTERM)
                signal.signal(signal.SIGTERM, _on_sigterm)

    try:
        return asyncio.run(stoppable())
    except QuorumError as error:
        _fail(error)
    except (KeyboardInterrupt, asyncio.CancelledError) as stop:
        # Every finished step is already checkpointed; say how to pick the thread up again.
        where = f"; continue with `quorum resume {thread}`" if thread else ""
        err.print(f"[yellow]stopped[/yellow]{escape(where)}")
        raise typer.Exit(143 if terminated or isinstance(stop, _Terminated) else 130) from None
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, previous)


def _fail(error: QuorumError) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(str(error))}")
    raise typer.Exit(error.exit_code)


def _whole(console: Console, table: Table) -> None:
    """Print `table` at the terminal's width, or whole when piped (nothing re-wraps it)."""
    if not console.is_terminal:
        console = Console(file=console.file, width=120, highlight=False, soft_wrap=True)
    console.print(table)


def _ledger_table(ledger: Ledger, *, title: str = "ledger") -> Table:
    """What a thread's model calls spent, per agent, per run (when resumed) and in total."""
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("agent", no_wrap=True)
    for name in ("calls", "in tok", "out tok", "cost $", "wait s", "p50 s", "p95 s", "tries"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("errors", justify="right", no_wrap=True)

    def cells(row: LedgerRow) -> list[str]:
        return [
            str(row.calls),
            f"{row.input_tokens:,}",
            f"{row.output_tokens:,}",
            f"{row.cost_usd:.6f}",
            f"{row.seconds:.3f}",
            f"{row.p50_seconds:.3f}",
            f"{row.p95_seconds:.3f}",
            str(row.attempts),
            str(row.errors),
        ]

    for agent, row in ledger.agents.items():
        table.add_row(escape(agent), *cells(row))
    if len(ledger.runs) > 1:
        table.add_section()
        for n, row in enumerate(ledger.runs, 1):
            table.add_row(f"run {n}", *cells(row))
    table.add_section()
    table.add_row("total", *cells(ledger.total), style="bold")
    return table


EXIT_CODES = {
    "completed": 0,
    "failed": 1,
    "interrupted": 1,
    "running": 3,
    "step_limit": 4,
    "budget_exceeded": 4,
    "waiting_approval": 5,
    "needs_reconciliation": 5,
}
"""The exit code `run`, `resume`, `approve` and `resolve` end with, by the thread's status."""


def _parse_context(model: str | None, settings: list[str]) -> QuorumContext:
    return QuorumContext.from_dict(_setting_values(model, settings))


def _setting_values(model: str | None, settings: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in settings:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {item!r} is not KEY=VALUE", hint="e.g. --set max_steps=5")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    if model:
        values["model"] = model
    return values


def _jsonable(info: ThreadInfo, *, full: bool) -> Any:
    data: dict[str, Any] = {
        "thread_id": info.thread_id,
        "pattern": info.pattern,
        "status": info.status,
        "updated_at": info.updated_at,
        "input": info.input,
        "output": info.output,
        "usage": info.usage,
        "ledger": info.ledger,
        "error": info.error,
        "waiting": info.waiting,
        "answered": info.answered,
    }
    if full:
        data["decisions"] = info.decisions
        data["history"] = info.history
        data["checkpoints"] = info.checkpoints
        data["values"] = info.values
    return to_jsonable_python(data, fallback=str)
