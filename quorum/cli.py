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

# The slow part: what follows loads LangGraph, LangChain and openai.
import asyncio
import json
import re
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import version as package_version
from pathlib import Path
from typing import IO, Annotated, Any, Literal, NoReturn, TextIO, TypeVar

import typer
from pydantic_core import to_jsonable_python
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.prompt import Prompt
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from quorum import dry_run, embedded, models, report, runner
from quorum import threads as threads_api
from quorum.answers import SaidOnce
from quorum.context import QuorumContext
from quorum.effects import Decision
from quorum.errors import QuorumError, UsageError
from quorum.evals import STRATEGIES, run_eval
from quorum.evals.command import DEFAULT_STRATEGIES, Progress, question_set, save, strategy_list
from quorum.evals.harness import eval_id_for
from quorum.graphs import PATTERNS
from quorum.lifecycle import RunEvent
from quorum.metering import Ledger, LedgerRow
from quorum.settings import get_settings
from quorum.state import Usage, add_usage, total_tokens
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


class _Progress:
    """Shows a run's progress on stderr as it works.

    In a terminal, a live display of the agents running now (and for how long), the steps
    done, tokens, cost and the share of each budget used, with a line for each finished
    agent above it; piped, the same as plain lines, one per agent started and finished.
    """

    def __init__(
        self,
        context: QuorumContext | None = None,
        before: LedgerRow | None = None,
        *,
        stream: bool = False,
        verbose: bool = False,
    ) -> None:
        self.context = context
        self.before = before or LedgerRow()
        """What earlier runs of the thread spent: budgets count the whole thread."""
        self.usage: dict[str, Usage] = {}
        self.done = 0
        self.running: list[tuple[str, float]] = []
        self.live: Live | None = None
        # The embedded model answers one request at a time: parallel agents queue for it.
        self.one_at_a_time = models.current_endpoint().embedded
        self.stream = stream
        """Write the answer to stdout as its writer writes it."""
        self.verbose = verbose
        """Write every agent's replies to stderr as they are written."""
        self.answer = _Written(out.file, flush_each=out.is_terminal)
        """The answer as streamed: the reply its writer wrote last."""
        self.said_once = SaidOnce()
        self.talk = _Written(err.file, flush_each=True)
        self.talker = ""

    def __enter__(self) -> _Progress:
        # NO_COLOR asks for no escapes at all: the live display moves the cursor with them.
        if err.is_terminal and not err.is_dumb_terminal and not err.no_color:
            self.live = Live(
                console=err, get_renderable=self._display, refresh_per_second=8, transient=True
            )
            self.live.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    @property
    def wants_text(self) -> bool:
        """Whether the run should be streamed for this display."""
        return self.stream or self.verbose

    def __call__(self, event: RunEvent) -> None:
        if event.kind == "wrote":
            self._wrote(event)
            return
        self._end_lines()
        if event.kind == "started":
            self.running.append((event.agent, time.monotonic()))
            if self.live is None:
                err.print(f"  [cyan]▶[/cyan] {escape(event.agent)}{self._queued()}")
            else:
                self.live.refresh()
            return
        # Parallel workers finish in any order: drop the first one of that name.
        started = next((r for r in self.running if r[0] == event.agent), None)
        if started is not None:
            self.running.remove(started)
        if not event.error:
            self.done += 1
            self.usage = add_usage(self.usage, event.usage)
        if self.live is not None:
            self.live.refresh()  # the lines below print above the display as it is now
        if event.error:
            err.print(f"  [red]✗[/red] {escape(event.agent)}: {escape(event.error)}")
            return
        err.print(f"  [green]✓[/green] {escape(event.agent)}  [dim]{escape(self._totals())}[/dim]")

    def _wrote(self, event: RunEvent) -> None:
        if self.stream and event.answer:
            self._quiet()
            if self.talk.open:
                self.talk.end_line()
            if event.call != self.answer.call:
                self.answer.write(self.answer.call, self.said_once.close())
                self.said_once = SaidOnce()  # each reply is an answer of its own
            # What is shown is the answer the thread keeps: a repeated paragraph is dropped.
            self.answer.write(event.call, self.said_once.feed(event.text))
        elif self.verbose:
            self._quiet()
            if self.answer.open:
                self.answer.end_line()
            if event.call != self.talker:
                self.talk.end_line()
                replayed = " [dim](replayed from the journal)[/dim]" if event.replayed else ""
                err.print(f"  [magenta]✎[/magenta] {escape(event.agent)}{replayed}")
                self.talker = self.talk.call = event.call
                self.talk.text = ""
            self.talk.write(event.call, event.text)

    def _quiet(self) -> None:
        """Stop the live display for good: written text and a redrawn display do not mix."""
        if self.live is not None:
            self.live.stop()
            self.live = None

    def _end_lines(self) -> None:
        """End a line of streamed text, so a progress line does not continue it."""
        self.answer.end_line()
        self.talk.end_line()
        self.talker = ""

    def _totals(self) -> str:
        before = self.before
        calls = before.calls + sum(u["calls"] for u in self.usage.values())
        tokens = before.input_tokens + before.output_tokens + total_tokens(self.usage)
        cost = before.cost_usd + sum(u.get("cost_usd", 0.0) for u in self.usage.values())
        parts = [f"steps done {self.done}", f"tokens so far {tokens:,}", f"cost ${cost:.4f}"]
        context = self.context
        if context is not None:
            for name, used, limit in (
                ("tokens", tokens, context.max_tokens),
                ("cost", cost, context.max_cost_usd),
                ("calls", calls, context.max_model_calls),
            ):
                if limit:
                    parts.append(f"{name} budget {used / limit:.0%} used")
        return " · ".join(parts)

    def _queued(self) -> str:
        if not self.one_at_a_time or len(self.running) < 2:
            return ""
        return (
            f"  [dim]queued: {len(self.running)} agents share the embedded model, "
            "which answers one request at a time[/dim]"
        )

    def _display(self) -> RenderableType:
        now = time.monotonic()
        running = Table.grid(padding=(0, 2))
        for agent, since in list(self.running):
            running.add_row(Spinner("dots", style="cyan"), escape(agent), f"{now - since:.1f} s")
        return Group(
            running
            if self.running
            else Text("starting" if not self.done else "between steps", style="dim"),
            Text.from_markup(self._queued().strip()),
            Text(self._totals(), style="bold"),
        )


class _Written:
    """Text streamed to one file, a reply at a time, ended with a newline when it stops."""

    def __init__(self, file: IO[str], *, flush_each: bool) -> None:
        self.file = file
        self.flush_each = flush_each
        """Flush every part (a terminal); otherwise at each line's end (piped)."""
        self.call = ""
        self.text = ""
        """The last reply written, as far as it came."""
        self.open = False
        """The last line written has no newline yet."""

    def write(self, call: str, text: str) -> None:
        if not text:
            return
        if call != self.call:
            if self.text:
                self.end_line()
                self.file.write("\n")  # a blank line between two replies
            self.call, self.text = call, ""
        self.text += text
        self.file.write(text)
        self.open = not text.endswith("\n")
        if self.flush_each or "\n" in text:
            self.file.flush()

    def end_line(self) -> None:
        if self.open:
            self.file.write("\n")
            self.file.flush()
            self.open = False


def _resume_progress(
    thread: str,
    db: str | None,
    settings: dict[str, Any] | None,
    *,
    stream: bool = False,
    verbose: bool = False,
) -> _Progress:
    """Progress of a resume: its budgets, and what the thread spent before it."""

    async def so_far() -> tuple[QuorumContext, LedgerRow]:
        context = await threads_api.run_context(thread, database=db, settings=settings)
        return context, (await threads_api.ledger(thread, database=db)).total

    context, before = _run_async(so_far(), thread=thread)
    return _Progress(context, before, stream=stream, verbose=verbose)


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


def _summary(info: ThreadInfo) -> None:
    usage = info.usage
    calls = sum(u["calls"] for u in usage.values())
    tokens_in = sum(u["input_tokens"] for u in usage.values())
    tokens_out = sum(u["output_tokens"] for u in usage.values())
    err.print(
        f"[bold]thread[/bold] {info.thread_id}  [bold]status[/bold] {info.status}  "
        f"[bold]tokens[/bold] {tokens_in + tokens_out:,} ({tokens_in:,} in, {tokens_out:,} out) "
        f"over {calls} model calls"
    )


def _finish(
    info: ThreadInfo,
    *,
    db: str | None = None,
    as_json: bool = False,
    progress: _Progress | None = None,
) -> None:
    """Print how the run ended (asking for approvals in a terminal) and exit with its code.

    The answer is printed unless `progress` streamed it already, word for word.
    """
    if as_json:
        # For scripts: the thread on stdout, the exit code by its status, no questions asked.
        out.print_json(data=_jsonable(info, full=False))
        _summary(info)
        raise typer.Exit(EXIT_CODES.get(info.status, 1))
    stream, verbose = (progress.stream, progress.verbose) if progress else (False, False)
    while info.status == "waiting_approval" and _interactive():
        decisions = _ask_for_decisions(info)
        with _resume_progress(info.thread_id, db, None, stream=stream, verbose=verbose) as progress:
            info = _run_async(
                runner.resume(
                    info.thread_id,
                    database=db,
                    on_event=progress,
                    approve=decisions,
                    via="cli",
                    stream=progress.wants_text,
                ),
                thread=info.thread_id,
            )
    streamed = ""
    if progress is not None:
        progress.answer.write(progress.answer.call, progress.said_once.close())
        progress.answer.end_line()
        streamed = " ".join(progress.answer.text.split())
    if info.output and " ".join(info.output.split()) != streamed:
        if streamed:
            # The writer's draft was changed after it was written (a repeated paragraph
            # dropped) or was not the last word: the answer is what follows.
            err.print("[dim]the answer, as finally given:[/dim]")
        out.print(info.output, markup=False)
    _summary(info)
    if info.ledger.total.attempts:
        _whole(err, _ledger_table(info.ledger))
    if info.status in ("budget_exceeded", "step_limit"):
        err.print(f"[yellow]{info.status}:[/yellow] {escape(info.error or info.output)}")
        more = "a larger budget" if info.status == "budget_exceeded" else "more steps"
        err.print(f"continue with {more}: `quorum resume {info.thread_id} --set NAME=VALUE`")
    if info.waiting:
        _explain_waiting(info)
    code = EXIT_CODES.get(info.status, 1)
    if code:
        raise typer.Exit(code)


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


def _explain_waiting(info: ThreadInfo) -> None:
    thread = info.thread_id
    for waiting in info.waiting:
        err.print(
            f"[yellow]needs a decision:[/yellow] {escape(waiting['question'])}\n"
            f"  call {escape(waiting['call_id'])}: {escape(waiting['tool'])}"
            f"({escape(json.dumps(waiting['args']))})\n"
            f"  idempotency key: {escape(waiting['idempotency_key'])}"
        )
    kinds = {w["type"] for w in info.waiting}
    if "approval" in kinds:
        err.print(
            f"approve: `quorum approve {thread}`; reject: `quorum approve {thread} --reject "
            f"--reason TEXT`; change the arguments: `quorum approve {thread} --edit JSON`"
        )
    if "needs_reconciliation" in kinds:
        err.print(
            f"if it took effect: `quorum resolve {thread} done`; "
            f"to run it again: `quorum resolve {thread} retry`"
        )


def _ask_for_decisions(info: ThreadInfo) -> dict[str, Decision]:
    """Ask the person at the terminal about every call waiting for approval."""
    decisions: dict[str, Decision] = {}
    for waiting in info.waiting:
        if waiting["type"] != "approval":
            continue
        err.print(
            f"[bold yellow]approval needed[/bold yellow] agent {escape(waiting['agent'])} "
            f"wants to run [bold]{escape(waiting['tool'])}[/bold] (cannot be undone):\n"
            f"  {escape(json.dumps(waiting['args'], indent=2))}"
        )
        answer = Prompt.ask(
            "approve, reject or edit?", choices=["a", "r", "e"], default="r", console=err
        )
        if answer == "a":
            decisions[waiting["call_id"]] = Decision(action="approve")
        elif answer == "r":
            reason = Prompt.ask("reason (the agent reads it)", default="", console=err)
            decisions[waiting["call_id"]] = Decision(action="reject", reason=reason)
        else:
            decisions[waiting["call_id"]] = Decision(
                action="approve", args=_edited(Prompt.ask("arguments as JSON", console=err))
            )
    return decisions


def _edited(text: str) -> dict[str, Any]:
    try:
        args = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"the edited arguments are not JSON: {error}") from None
    if not isinstance(args, dict):
        raise UsageError("the edited arguments must be a JSON object", hint='{"path": "a.md"}')
    return args


def _read_input(text: str | None, file: Path | None) -> str:
    """The run's input: the argument, standard input (`-`), or a file; UTF-8 only."""
    if file is not None and text is not None:
        raise UsageError("give the input as an argument or with --file, not both")
    if file is not None:
        try:
            data = file.read_bytes()
        except OSError as error:
            raise UsageError(f"cannot read --file {str(file)!r}: {error.strerror}") from None
        source = f"the file {str(file)!r}"
    elif text == "-":
        data = sys.stdin.buffer.read()
        source = "standard input"
    elif text is None:
        raise UsageError(
            "no input given", hint="pass it as INPUT, as - to read standard input, or --file"
        )
    else:
        # Arguments the terminal could not decode arrive as lone surrogates.
        data = text.encode("utf-8", "surrogateescape")
        source = "the input argument"
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(
            f"{source} is not valid UTF-8 (undecodable byte at position {error.start})",
            hint="pass UTF-8 text; convert other encodings first, e.g. with iconv",
        ) from None


@app.command()
def run(
    pattern: PatternArgument,
    text: Annotated[
        str | None,
        typer.Argument(
            metavar="[INPUT]", help="Goal, topic, question or task; - reads standard input."
        ),
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="Read the input from this UTF-8 file.")
    ] = None,
    thread: Annotated[
        str | None,
        typer.Option("--thread", help="Thread id for the run.", show_default="a new id"),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Default model for every agent.")] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="Run context setting KEY=VALUE, e.g. max_rounds=2."),
    ] = None,
    db: DatabaseOption = None,
    as_json: JsonOption = False,
    stream: StreamOption = True,
    verbose: VerboseOption = False,
) -> None:
    """Run PATTERN on INPUT, streaming progress and the answer, and print the thread id."""
    try:
        context = _parse_context(model, settings or [])
        goal = _read_input(text, file)
        runner.check_input(goal)
    except QuorumError as error:
        _fail(error)
    thread_id = thread or runner.new_thread_id()
    # --json keeps stdout for the thread's JSON alone.
    with _Progress(context, stream=stream and not as_json, verbose=verbose) as progress:
        info = _run_async(
            runner.run(
                pattern,
                goal,
                thread_id=thread_id,
                context=context,
                database=db,
                on_event=progress,
                stream=progress.wants_text,
            ),
            thread=thread_id,
        )
    _finish(info, db=db, as_json=as_json, progress=progress)


@app.command()
def resume(
    thread: Annotated[str, typer.Argument(help="The thread to continue.")],
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="Change a run setting from here on, e.g. max_tokens=50000."),
    ] = None,
    checkpoint: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="CHECKPOINT",
            help="Run on from this earlier checkpoint as a fork (an id, or a unique start of "
            "one, from `quorum show THREAD --history`).",
            show_default="the latest checkpoint",
        ),
    ] = None,
    db: DatabaseOption = None,
    as_json: JsonOption = False,
    stream: StreamOption = True,
    verbose: VerboseOption = False,
    preview_only: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Say what the resume would do (steps replayed, served by the journal or run "
            "anew; what waits; budgets; the lease) and run nothing. Exits 0 if it can go on, "
            "5 if it waits for a person, 3 if the thread is busy.",
        ),
    ] = False,
) -> None:
    """Continue an interrupted, crashed, failed or stopped THREAD from its last checkpoint.

    With --from, run it on from an earlier checkpoint instead: a fork, which becomes the
    thread's latest state (the model is asked again from there; the earlier branch is kept).
    """
    try:
        changed = _setting_values(None, settings or [])
        if preview_only:
            seen = _run_async(
                dry_run.preview(thread, database=db, settings=changed, checkpoint_id=checkpoint)
            )
    except QuorumError as error:
        _fail(error)
    if preview_only:
        if as_json:
            out.print_json(data=seen.to_json())
        else:
            _print_preview(seen)
        raise typer.Exit(seen.exit_code)
    shown = _Shown(as_json, stream, verbose)
    _continue(thread, db, shown, settings=changed, checkpoint_id=checkpoint)


FATES = {
    "replayed": "[green]replayed[/green] from the checkpoint (finished before the stop)",
    "journal": "runs again, [green]journal serves {served}[/green]",
    "anew": "[yellow]runs anew[/yellow]",
    "waits": "[magenta]waits for a person[/magenta]",
}


def _print_preview(seen: dry_run.Preview) -> None:
    """A dry run's preview for a person: what runs, what is served, what waits, what is left."""
    point = seen.checkpoint
    where = "forks from" if seen.fork else "continues from"
    out.print(
        f"[bold]{seen.pattern}[/bold] thread {escape(seen.thread_id)}: {seen.status} → "
        f"[bold]{seen.verdict}[/bold]: {escape(seen.reason)}"
    )
    out.print(f"{where} checkpoint {point.checkpoint_id} (step {point.step}, {point.created_at})")
    lease = seen.lease
    out.print("lease: free" if lease.free else f"lease: held by {escape(lease.holder)}")
    for step in seen.steps:
        served = f"{step.served_calls} call(s), {step.served_tokens:,} tokens"
        if step.served_cost_usd:
            served += f", ${step.served_cost_usd:.4f}"
        fate = FATES[step.fate].format(served=served)
        within = f" [dim]in {escape(step.within)}[/dim]" if step.within else ""
        out.print(f"  {escape(step.label)}{within}: {fate}")
        if step.error:
            again = f"; {step.asked_again} call(s) asked again" if step.asked_again else ""
            out.print(f"    [red]failed[/red]: {escape(step.error)}{again}")
    exact = "" if seen.exact else " at most"
    out.print(
        f"journal: {seen.recorded_calls} call(s) recorded; the resume is spared{exact} "
        f"{seen.served_calls} request(s), {seen.served_tokens:,} tokens, "
        f"${seen.served_cost_usd:.4f}"
    )
    for waiting in seen.waiting:
        out.print(f"  [magenta]waits[/magenta]: {escape(waiting.question)}")
        for command in waiting.commands:
            out.print(f"    {escape(command)}")
    for budget in seen.budgets:
        scope = "run" if budget.scope == "run" else f"agent {budget.scope}"
        state = "[red]used up[/red]" if budget.exhausted else f"{budget.left:,.4g} left"
        spent = f"{budget.used:,.4g} of {budget.limit:,.4g}"
        out.print(f"  budget {budget.name} ({scope}): {spent}, {state}")
    for note in seen.notes:
        out.print(f"  [dim]note: {escape(note)}[/dim]")


@app.command()
def approve(
    thread: Annotated[str, typer.Argument(help="The thread waiting for approval.")],
    call: Annotated[
        str | None,
        typer.Option("--call", help="The tool call to decide.", show_default="every waiting call"),
    ] = None,
    reject: Annotated[bool, typer.Option("--reject", help="Reject instead of approving.")] = False,
    reason: Annotated[
        str, typer.Option("--reason", help="Why it is rejected; the agent reads it.")
    ] = "",
    edit: Annotated[
        str | None, typer.Option("--edit", metavar="JSON", help="Approve with these arguments.")
    ] = None,
    db: DatabaseOption = None,
    as_json: JsonOption = False,
    stream: StreamOption = True,
    verbose: VerboseOption = False,
) -> None:
    """Approve (or reject) irreversible tool calls THREAD waits for, then continue it."""
    try:
        if reject and edit is not None:
            raise UsageError("--reject and --edit do not go together")
        decision = (
            Decision(action="reject", reason=reason)
            if reject
            else Decision(action="approve", args=_edited(edit))
            if edit is not None
            else Decision(action="approve")
        )
    except QuorumError as error:
        _fail(error)
    decisions: Decision | dict[str, Decision] = {call: decision} if call else decision
    _continue(thread, db, _Shown(as_json, stream, verbose), approve=decisions)


@app.command()
def resolve(
    thread: Annotated[str, typer.Argument(help="The thread waiting for a decision.")],
    decision: Annotated[
        Literal["done", "retry"],
        typer.Argument(help="done: the side effect took place; retry: run it again."),
    ],
    db: DatabaseOption = None,
    as_json: JsonOption = False,
    stream: StreamOption = True,
    verbose: VerboseOption = False,
) -> None:
    """Decide a side effect of unknown outcome (see `quorum show`), then continue THREAD."""
    _continue(thread, db, _Shown(as_json, stream, verbose), resolution=decision)


@dataclass(frozen=True)
class _Shown:
    """How a command that runs shows its run: JSON at the end, or the answer as it comes."""

    as_json: bool
    stream: bool
    verbose: bool


def _continue(thread: str, db: str | None, shown: _Shown, **answers: Any) -> None:
    """Resume THREAD (with a person's answers or new settings) and finish as `run` does."""
    with _resume_progress(
        thread,
        db,
        answers.get("settings"),
        stream=shown.stream and not shown.as_json,
        verbose=shown.verbose,
    ) as progress:
        # A person's decisions are recorded as made at this terminal (user@host).
        info = _run_async(
            runner.resume(
                thread,
                database=db,
                on_event=progress,
                via="cli",
                stream=progress.wants_text,
                **answers,
            ),
            thread=thread,
        )
    _finish(info, db=db, as_json=shown.as_json, progress=progress)


@app.command()
def threads(
    db: DatabaseOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    delete: Annotated[
        str | None,
        typer.Option("--delete", metavar="THREAD", help="Delete THREAD, its journal and ledger."),
    ] = None,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Delete old threads (with --older-than, --keep or both), their journals, "
            "ledgers and leases.",
        ),
    ] = False,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            metavar="AGE",
            help="With --prune: threads last updated longer ago than AGE: 30m, 12h, 7d, 2w.",
        ),
    ] = None,
    keep: Annotated[
        int | None,
        typer.Option(
            "--keep", metavar="N", help="With --prune: keep the N most recently updated threads."
        ),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="With --prune: delete without asking.")
    ] = False,
) -> None:
    """List threads with their pattern, status and last update (or delete some)."""
    if delete is not None:
        _run_async(threads_api.delete_thread(delete, database=db))
        err.print(f"deleted thread {escape(delete)}")
        return
    if prune or older_than is not None or keep is not None:
        _prune(db, older_than, keep, yes=yes, as_json=as_json, asked=prune)
        return
    infos = _run_async(threads_api.list_threads(database=db))
    if as_json:
        out.print_json(data=[_jsonable(i, full=False) for i in infos])
        return
    table = Table("thread", "pattern", "status", "updated", "tokens", "input")
    for info in infos:
        table.add_row(
            info.thread_id,
            info.pattern,
            info.status,
            info.updated_at[:19],
            f"{total_tokens(info.usage):,}",
            info.input[:48],
        )
    out.print(table if infos else "no threads yet")


def _prune(
    db: str | None,
    older_than: str | None,
    keep: int | None,
    *,
    yes: bool,
    as_json: bool,
    asked: bool,
) -> None:
    """Delete the threads --older-than and --keep select, after asking unless --yes."""
    try:
        if not asked:
            raise UsageError("--older-than and --keep select threads for --prune: add --prune")
        if older_than is None and keep is None:
            raise UsageError(
                "--prune needs --older-than AGE, --keep N or both",
                hint="e.g. quorum threads --prune --older-than 7d",
            )
        age = _duration(older_than) if older_than is not None else None
    except QuorumError as error:
        _fail(error)
    doomed = _run_async(
        threads_api.prune_threads(older_than=age, keep=keep, database=db, dry_run=True)
    )
    if doomed and not yes:
        _confirm_deletion(doomed)
    agreed = {info.thread_id for info in doomed}
    deleted = _run_async(
        threads_api.prune_threads(older_than=age, keep=keep, database=db, among=agreed)
    )
    if as_json:
        out.print_json(data=[info.thread_id for info in deleted])
    err.print(f"deleted {len(deleted)} thread(s)" + "".join(f"\n  {i.thread_id}" for i in deleted))


def _confirm_deletion(doomed: list[ThreadInfo]) -> None:
    """Ask the person at the terminal; exit 1 if they say no, 2 if nobody can be asked."""
    if not _interactive():
        _fail(
            UsageError(
                f"--prune would delete {len(doomed)} thread(s) and asks first",
                hint="add --yes to delete without asking",
            )
        )
    for info in doomed:
        err.print(f"  {info.thread_id}  {info.pattern}  {info.status}  updated {info.updated_at}")
    if not typer.confirm(f"delete these {len(doomed)} thread(s)?", err=True):
        err.print("nothing deleted")
        raise typer.Exit(1)


DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _duration(text: str) -> timedelta:
    """An age such as 30m, 12h, 7d or 2w."""
    found = DURATION.fullmatch(text.strip().lower())
    if found is None:
        raise UsageError(
            f"--older-than {text!r} is not an age", hint="a number and a unit: 30m, 12h, 7d, 2w"
        )
    return timedelta(**{UNITS[found[2]]: float(found[1])})


@app.command()
def show(
    thread: Annotated[str, typer.Argument(help="The thread to show.")],
    db: DatabaseOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    checkpoints: Annotated[
        bool,
        typer.Option(
            "--history",
            help="List every checkpoint (id, step, next agents, time): what `resume --from` "
            "forks from.",
        ),
    ] = False,
) -> None:
    """Print a thread's final output and its step history."""
    info = _run_async(threads_api.get_thread(thread, database=db))
    if as_json:
        out.print_json(data=_jsonable(info, full=True))
        return
    if checkpoints:
        _print_checkpoints(info)
        return
    out.print(f"[bold]{info.pattern}[/bold] thread {escape(info.thread_id)}: {info.status}")
    out.print(f"[bold]input[/bold] {escape(info.input)}")
    history = Table("step", "agents", "at", "error", title="history")
    for entry in info.history:
        history.add_row(
            str(entry.step), ", ".join(entry.agents), entry.created_at[:19], entry.error or ""
        )
    out.print(history)
    _whole(out, _ledger_table(info.ledger))
    if info.error:
        out.print(f"[red]error[/red] {escape(info.error)}")
    for decision in info.decisions:
        made = "approved" if decision["action"] == "approve" else "rejected"
        at = datetime.fromtimestamp(decision["at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        asked = f"{decision['tool']} (agent '{decision['agent']}')"
        out.print(
            f"[bold]approval[/bold] {escape(asked)} {made} by {escape(decision['by'])} "
            f"via {decision['via']} at {at} UTC"
        )
    if info.waiting:
        _explain_waiting(info)
    if not info.output:
        out.print("[dim](no output yet)[/dim]")
    elif out.is_terminal:
        from rich.markdown import Markdown  # only a terminal shows it (0.25 s to import)

        out.print(Markdown(info.output))
    else:
        out.print(info.output, markup=False)  # piped: the Markdown itself, whole


def _print_checkpoints(info: ThreadInfo) -> None:
    """The checkpoints of the thread's current branch, oldest first."""
    table = Table(
        "checkpoint", "step", "next", "source", "at", "error", title=f"thread {info.thread_id}"
    )
    for entry in info.checkpoints:
        table.add_row(
            entry.checkpoint_id,
            str(entry.step),
            ", ".join(entry.agents) or ("(the input)" if entry.source == "input" else "(end)"),
            entry.source,
            entry.created_at,
            escape(entry.error or ""),
        )
    out.print(table)
    err.print(f"fork from one: `quorum resume {info.thread_id} --from CHECKPOINT`")


@app.command()
def graph(
    pattern: PatternArgument,
    png: Annotated[
        Path | None,
        typer.Option("--png", metavar="FILE", help="Draw it as a PNG image into FILE instead."),
    ] = None,
) -> None:
    """Print PATTERN's graph as a Mermaid diagram, or draw it as a PNG (with Graphviz)."""
    if pattern not in PATTERNS:
        _fail(
            UsageError(f"unknown pattern {pattern!r}", hint=f"choose one of: {', '.join(PATTERNS)}")
        )
    if png is not None:
        try:
            _write(png, report.draw_png(pattern))
        except QuorumError as error:
            _fail(error)
        err.print(f"wrote {escape(str(png))}")
        return
    compiled = PATTERNS[pattern].compile(name=pattern)
    out.print(compiled.get_graph().draw_mermaid(), markup=False)


@app.command("report")
def report_command(
    thread: Annotated[str, typer.Argument(help="The thread to report on.")],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="FILE", help="Where to write it [default: THREAD.html]."
        ),
    ] = None,
    db: DatabaseOption = None,
) -> None:
    """Write a self-contained HTML report of THREAD: timeline, plan, ledger, failures, answer."""
    page = _run_async(report.write_report(thread, database=db))
    target = output or Path(f"{thread}.html")
    try:
        _write(target, page.encode("utf-8"))
    except QuorumError as error:
        _fail(error)
    err.print(f"wrote {escape(str(target))}")


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as error:
        raise UsageError(f"cannot write {str(path)!r}: {error.strerror}") from None


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


@app.command("server-key")
def server_key(
    identity: Annotated[str, typer.Argument(help="Who the key is for (the owner of threads).")],
) -> None:
    """Make an API key for the LangGraph server: the key for IDENTITY, and its hashed entry.

    Give the key to IDENTITY (once: it is not kept); add the entry to QUORUM_SERVER_KEYS.
    """
    from quorum.auth import hashed, new_key

    if not identity.strip() or any(c in identity for c in "=,+ "):
        _fail(UsageError(f"{identity!r} is not an identity", hint="use a name like alice"))
    key = new_key()
    out.print(key, markup=False)
    err.print(f"add to QUORUM_SERVER_KEYS (comma-separated): {identity}={hashed(key)}")


model_app = typer.Typer(help="The embedded local model.", no_args_is_help=True)
app.add_typer(model_app, name="model")


@model_app.command("serve")
def model_serve() -> None:
    """Serve the embedded model until stopped: Ctrl-C, kill or `quorum model stop`.

    Runs reuse it instead of starting one. Killed outright (SIGKILL, a closed terminal), this
    command leaves the server running for them; `quorum model stop` stops it.
    """
    settings = get_settings()
    running = embedded.find_running(settings, any_model=True)
    if running is not None:
        _fail(
            UsageError(
                f"{running.model} is already served at {running.base_url}",
                hint="runs use it; `quorum model stop` stops it",
            )
        )
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # kill stops it as Ctrl-C does
    server = None
    try:
        server = embedded.start(settings, detached=True)  # interrupted, it stops what it started
        err.print(f"serving {server.model} at [bold]{server.base_url}[/bold] (Ctrl-C stops)")
        assert server.process is not None
        server.process.wait()
    except QuorumError as error:
        _fail(error)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.stop()
            embedded.forget(settings)


@model_app.command("status")
def model_status() -> None:
    """Say whether a served embedded model is running, and where."""
    running = embedded.find_running(get_settings(), any_model=True)
    out.print(f"running {running.model} at {running.base_url}" if running else "not running")


@model_app.command("stop")
def model_stop() -> None:
    """Stop the embedded model that `quorum model serve` started."""
    stopped = embedded.stop_served(get_settings())
    out.print(f"stopped the model at {stopped.base_url}" if stopped else "no served model to stop")


@app.command("eval")
def eval_(
    strategies: Annotated[
        str, typer.Option("--strategies", "-s", help="Comma-separated: " + ", ".join(STRATEGIES))
    ] = DEFAULT_STRATEGIES,
    questions: Annotated[
        str, typer.Option("--questions", "-q", help="arithmetic, word, or a JSONL file.")
    ] = "arithmetic",
    count: Annotated[int, typer.Option("--count", "-n", help="Questions generated.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the generated questions.")] = 0,
    eval_id: Annotated[
        str | None,
        typer.Option("--id", help="Eval id (default: made from the questions and settings)."),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Questions answered at once.")] = 2,
    max_tokens: Annotated[int | None, typer.Option(help="Budget for the whole eval.")] = None,
    max_cost: Annotated[float | None, typer.Option(help="Budget in US dollars.")] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for eval.json and eval.png (default: the eval id)."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Default model for every agent.")] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="Run setting KEY=VALUE, e.g. samples=5, max_rounds=2."),
    ] = None,
    db: DatabaseOption = None,
) -> None:
    """Compare strategies on questions with exact answers: accuracy, tokens, cost, time.

    Each question runs on its own thread: the same command again skips finished questions.
    """
    try:
        context = _parse_context(model, settings or [])
        chosen = question_set(questions, count, seed)
        names = strategy_list(strategies)
    except QuorumError as error:
        _fail(error)
    eval_id = eval_id or eval_id_for(chosen, context)
    progress = Progress(err, eval_id, len(chosen) * len(names))
    result = _run_async(
        run_eval(
            chosen,
            names,
            context=context,
            eval_id=eval_id,
            database=db,
            concurrency=concurrency,
            max_tokens=max_tokens,
            max_cost_usd=max_cost,
            on_result=progress,
        )  # fmt: skip
    )
    save(result, out_dir or Path(eval_id), out, err)
    if result.stopped:
        raise typer.Exit(4)


for stop, handler in _AT_START.items():
    signal.signal(stop, handler)  # loaded: stops are handled as before (see `_run_async`)

if __name__ == "__main__":
    app()
