"""The `quorum` command line: run a pattern, resume a thread, list and inspect threads.

Progress goes to stderr while a run works (which agent is running, steps done, tokens so
far); the answer goes to stdout, so `quorum run ... > answer.md` keeps only the answer.
Exit codes: 0 completed; 1 failed (an agent raised: fix the cause, then resume); 2 bad
input (one line, nothing saved); 3 the thread is busy in another run; 4 a budget or the step
limit ran out (resume with `--set` to give more); 5 the thread waits for a person (approve
a tool call with `quorum approve`, settle an effect with `quorum resolve`). Ctrl-C (130) and
SIGTERM (143) stop a run cleanly: every finished step is kept, and the message names the
thread to resume. In a terminal, `run` and `resume` ask for approvals on the spot.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, Literal, NoReturn, TypeVar

import typer
from pydantic_core import to_jsonable_python
from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape
from rich.prompt import Prompt
from rich.table import Table

from quorum import embedded, models, runner
from quorum.context import QuorumContext
from quorum.effects import Decision
from quorum.errors import QuorumError, UsageError
from quorum.evals import STRATEGIES, run_eval
from quorum.evals.command import DEFAULT_STRATEGIES, Progress, question_set, save, strategy_list
from quorum.evals.harness import eval_id_for
from quorum.graphs import PATTERNS
from quorum.runner import RunEvent, ThreadInfo
from quorum.settings import get_settings
from quorum.state import Usage, add_usage, total_tokens

app = typer.Typer(
    name="quorum",
    help="Run multi-agent patterns on durable, resumable threads.",
    epilog="Exit codes: 0 completed; 1 failed or interrupted; 2 bad input; 3 thread busy; "
    "4 budget or step limit reached (resume --set gives more); 5 waiting for a person "
    "(quorum approve / quorum resolve); 130 Ctrl-C; 143 SIGTERM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)  # answers are piped: never re-wrap them

PATTERN_HELP = f"Which pattern: {', '.join(PATTERNS)}."

DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--db", help="Checkpoint store: SQLite file or postgresql:// URL [default: settings]."
    ),
]
T = TypeVar("T")


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated()


def _run_async(coroutine: Coroutine[Any, Any, T], *, thread: str | None = None) -> T:
    # A service manager, a container runtime or `kill` stops a run with SIGTERM: stop it
    # as cleanly as Ctrl-C (asyncio cancels the run, LangGraph keeps every finished step).
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if on_main else None
    try:
        return asyncio.run(coroutine)
    except QuorumError as error:
        _fail(error)
    except KeyboardInterrupt as stop:
        # Every finished step is already checkpointed; say how to pick the thread up again.
        where = f"; continue with `quorum resume {thread}`" if thread else ""
        err.print(f"[yellow]stopped[/yellow]{escape(where)}")
        raise typer.Exit(143 if isinstance(stop, _Terminated) else 130) from None
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, previous)


def _fail(error: QuorumError) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(str(error))}")
    raise typer.Exit(error.exit_code)


class _Progress:
    """Prints each agent as it starts and finishes, with the tokens spent so far."""

    def __init__(self) -> None:
        self.usage: dict[str, Usage] = {}
        self.done = 0
        self.running = 0
        # The embedded model answers one request at a time: parallel agents queue for it.
        self.one_at_a_time = models.current_endpoint().embedded

    def __call__(self, event: RunEvent) -> None:
        if event.kind == "started":
            self.running += 1
            queued = (
                f"  [dim]queued: {self.running} agents share the embedded model, "
                "which answers one request at a time[/dim]"
                if self.one_at_a_time and self.running > 1
                else ""
            )
            err.print(f"  [cyan]▶[/cyan] {event.agent}{queued}")
            return
        self.running = max(self.running - 1, 0)
        if event.error:
            err.print(f"  [red]✗[/red] {event.agent}: {escape(event.error)}")
            return
        self.done += 1
        self.usage = add_usage(self.usage, event.usage)
        err.print(
            f"  [green]✓[/green] {event.agent}  [dim]steps done {self.done} · "
            f"tokens so far {total_tokens(self.usage):,}[/dim]"
        )


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


def _finish(info: ThreadInfo, *, db: str | None = None) -> None:
    """Print how the run ended (asking for approvals in a terminal) and exit with its code."""
    while info.status == "waiting_approval" and _interactive():
        decisions = _ask_for_decisions(info)
        info = _run_async(
            runner.resume(info.thread_id, database=db, on_event=_Progress(), approve=decisions),
            thread=info.thread_id,
        )
    if info.output:
        out.print(info.output, markup=False)
    _summary(info)
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
    pattern: Annotated[str, typer.Argument(help=PATTERN_HELP)],
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
        str | None, typer.Option("--thread", help="Thread id for the run [default: new id].")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Default model for every agent.")] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="Run context setting KEY=VALUE, e.g. max_rounds=2."),
    ] = None,
    db: DatabaseOption = None,
) -> None:
    """Run PATTERN on INPUT, streaming progress, and print the answer and the thread id."""
    try:
        context = _parse_context(model, settings or [])
        goal = _read_input(text, file)
        runner.check_input(goal)
    except QuorumError as error:
        _fail(error)
    thread_id = thread or runner.new_thread_id()
    info = _run_async(
        runner.run(
            pattern,
            goal,
            thread_id=thread_id,
            context=context,
            database=db,
            on_event=_Progress(),
        ),
        thread=thread_id,
    )
    _finish(info, db=db)


@app.command()
def resume(
    thread: Annotated[str, typer.Argument(help="The thread to continue.")],
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="Change a run setting from here on, e.g. max_tokens=50000."),
    ] = None,
    db: DatabaseOption = None,
) -> None:
    """Continue an interrupted, crashed, failed or stopped THREAD from its last checkpoint."""
    try:
        changed = _setting_values(None, settings or [])
    except QuorumError as error:
        _fail(error)
    _continue(thread, db, settings=changed)


@app.command()
def approve(
    thread: Annotated[str, typer.Argument(help="The thread waiting for approval.")],
    call: Annotated[
        str | None,
        typer.Option("--call", help="The tool call to decide [default: every waiting call]."),
    ] = None,
    reject: Annotated[bool, typer.Option("--reject", help="Reject instead of approving.")] = False,
    reason: Annotated[
        str, typer.Option("--reason", help="Why it is rejected; the agent reads it.")
    ] = "",
    edit: Annotated[
        str | None, typer.Option("--edit", metavar="JSON", help="Approve with these arguments.")
    ] = None,
    db: DatabaseOption = None,
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
    _continue(thread, db, approve=decisions)


@app.command()
def resolve(
    thread: Annotated[str, typer.Argument(help="The thread waiting for a decision.")],
    decision: Annotated[
        Literal["done", "retry"],
        typer.Argument(help="done: the side effect took place; retry: run it again."),
    ],
    db: DatabaseOption = None,
) -> None:
    """Decide a side effect of unknown outcome (see `quorum show`), then continue THREAD."""
    _continue(thread, db, resolution=decision)


def _continue(thread: str, db: str | None, **answers: Any) -> None:
    """Resume THREAD (with a person's answers or new settings) and finish as `run` does."""
    info = _run_async(
        runner.resume(thread, database=db, on_event=_Progress(), **answers), thread=thread
    )
    _finish(info, db=db)


@app.command()
def threads(
    db: DatabaseOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    delete: Annotated[
        str | None,
        typer.Option("--delete", metavar="THREAD", help="Delete THREAD, its journal and ledger."),
    ] = None,
) -> None:
    """List threads with their pattern, status and last update."""
    if delete is not None:
        _run_async(runner.delete_thread(delete, database=db))
        err.print(f"deleted thread {escape(delete)}")
        return
    infos = _run_async(runner.list_threads(database=db))
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


@app.command()
def show(
    thread: Annotated[str, typer.Argument(help="The thread to show.")],
    db: DatabaseOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print a thread's final output and its step history."""
    info = _run_async(runner.get_thread(thread, database=db))
    if as_json:
        out.print_json(data=_jsonable(info, full=True))
        return
    out.print(f"[bold]{info.pattern}[/bold] thread {escape(info.thread_id)}: {info.status}")
    out.print(f"[bold]input[/bold] {escape(info.input)}")
    history = Table("step", "agents", "at", "error", title="history")
    for entry in info.history:
        history.add_row(
            str(entry.step), ", ".join(entry.agents), entry.created_at[:19], entry.error or ""
        )
    out.print(history)
    usage = Table("agent", "calls", "input tokens", "output tokens", title="usage")
    for agent, spent in info.usage.items():
        usage.add_row(
            agent, str(spent["calls"]), f"{spent['input_tokens']:,}", f"{spent['output_tokens']:,}"
        )
    out.print(usage)
    if info.error:
        out.print(f"[red]error[/red] {escape(info.error)}")
    if info.waiting:
        _explain_waiting(info)
    out.print(Markdown(info.output) if info.output else "[dim](no output yet)[/dim]")


@app.command()
def graph(pattern: Annotated[str, typer.Argument(help=PATTERN_HELP)]) -> None:
    """Print PATTERN's graph as a Mermaid diagram."""
    if pattern not in PATTERNS:
        _fail(
            UsageError(f"unknown pattern {pattern!r}", hint=f"choose one of: {', '.join(PATTERNS)}")
        )
    compiled = PATTERNS[pattern].compile(name=pattern)
    out.print(compiled.get_graph().draw_mermaid(), markup=False)


def _jsonable(info: ThreadInfo, *, full: bool) -> Any:
    data: dict[str, Any] = {
        "thread_id": info.thread_id,
        "pattern": info.pattern,
        "status": info.status,
        "updated_at": info.updated_at,
        "input": info.input,
        "output": info.output,
        "usage": info.usage,
        "error": info.error,
        "waiting": info.waiting,
    }
    if full:
        data["history"] = info.history
        data["values"] = info.values
    return to_jsonable_python(data, fallback=str)


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


if __name__ == "__main__":
    app()
