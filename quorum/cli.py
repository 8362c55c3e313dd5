"""The `quorum` command line: run a pattern, resume a thread, list and inspect threads.

Progress goes to stderr while a run works (which agent is running, steps done, tokens so
far); the answer goes to stdout, so `quorum run ... > answer.md` keeps only the answer.
Errors print one line and exit non-zero: 2 for bad input, 1 for anything else.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Coroutine
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from pydantic_core import to_jsonable_python
from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape
from rich.table import Table

from quorum import embedded, runner
from quorum.context import QuorumContext
from quorum.errors import QuorumError, UsageError
from quorum.graphs import PATTERNS
from quorum.runner import RunEvent, ThreadInfo
from quorum.settings import get_settings
from quorum.state import Usage, add_usage, total_tokens

app = typer.Typer(
    name="quorum",
    help="Run multi-agent patterns on durable, resumable threads.",
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


def _run_async(coroutine: Coroutine[Any, Any, T], *, thread: str | None = None) -> T:
    try:
        return asyncio.run(coroutine)
    except QuorumError as error:
        _fail(error)
    except KeyboardInterrupt:
        # Every finished step is already checkpointed; say how to pick the thread up again.
        where = f"; continue with `quorum resume {thread}`" if thread else ""
        err.print(f"[yellow]stopped[/yellow]{escape(where)}")
        raise typer.Exit(130) from None


def _fail(error: QuorumError) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(str(error))}")
    raise typer.Exit(error.exit_code)


class _Progress:
    """Prints each agent as it starts and finishes, with the tokens spent so far."""

    def __init__(self) -> None:
        self.usage: dict[str, Usage] = {}
        self.done = 0

    def __call__(self, event: RunEvent) -> None:
        if event.kind == "started":
            err.print(f"  [cyan]▶[/cyan] {event.agent}")
            return
        if event.error:
            err.print(f"  [red]✗[/red] {event.agent}: {escape(event.error)}")
            return
        self.done += 1
        self.usage = add_usage(self.usage, event.usage)
        err.print(
            f"  [green]✓[/green] {event.agent}  [dim]steps done {self.done} · "
            f"tokens so far {total_tokens(self.usage):,}[/dim]"
        )


def _parse_context(model: str | None, settings: list[str]) -> QuorumContext:
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
    unknown = set(values) - set(QuorumContext.__dataclass_fields__)
    if unknown:
        raise UsageError(
            f"unknown context setting {', '.join(sorted(unknown))}",
            hint=f"known: {', '.join(QuorumContext.__dataclass_fields__)}",
        )
    try:
        return QuorumContext.from_dict(values)
    except ValidationError as error:
        problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in error.errors())
        raise UsageError(f"invalid context setting: {problems}") from None


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


def _finish(info: ThreadInfo) -> None:
    out.print(info.output, markup=False)
    _summary(info)


@app.command()
def run(
    pattern: Annotated[str, typer.Argument(help=PATTERN_HELP)],
    text: Annotated[str, typer.Argument(metavar="INPUT", help="Goal, topic, question or task.")],
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
    except QuorumError as error:
        _fail(error)
    thread_id = thread or runner.new_thread_id()
    info = _run_async(
        runner.run(
            pattern,
            text,
            thread_id=thread_id,
            context=context,
            database=db,
            on_event=_Progress(),
        ),
        thread=thread_id,
    )
    _finish(info)


@app.command()
def resume(
    thread: Annotated[str, typer.Argument(help="The thread to continue.")],
    db: DatabaseOption = None,
) -> None:
    """Continue an interrupted, crashed or failed THREAD from its last checkpoint."""
    info = _run_async(runner.resume(thread, database=db, on_event=_Progress()), thread=thread)
    _finish(info)


@app.command()
def threads(
    db: DatabaseOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List threads with their pattern, status and last update."""
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
    running = embedded.find_running(settings)
    if running is not None:
        _fail(
            UsageError(
                f"the embedded model is already served at {running.base_url}",
                hint="runs use it; `quorum model stop` stops it",
            )
        )
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # kill stops it as Ctrl-C does
    server = None
    try:
        server = embedded.start(settings, detached=True)  # interrupted, it stops what it started
        err.print(f"serving the embedded model at [bold]{server.base_url}[/bold] (Ctrl-C stops)")
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
    running = embedded.find_running(get_settings())
    out.print(f"running at {running.base_url}" if running else "not running")


@model_app.command("stop")
def model_stop() -> None:
    """Stop the embedded model that `quorum model serve` started."""
    stopped = embedded.stop_served(get_settings())
    out.print(f"stopped the model at {stopped.base_url}" if stopped else "no served model to stop")


if __name__ == "__main__":
    app()
