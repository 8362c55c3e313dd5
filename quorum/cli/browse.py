"""The commands that read and tidy threads: `threads`, `show`, `graph`, `report`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from quorum import report
from quorum import threads as threads_api
from quorum.cli.running import _explain_waiting, _interactive
from quorum.cli.shell import (
    DatabaseOption,
    PatternArgument,
    _fail,
    _jsonable,
    _ledger_table,
    _run_async,
    _whole,
    app,
    err,
    out,
)
from quorum.errors import QuorumError, UsageError
from quorum.graphs import PATTERNS
from quorum.state import total_tokens
from quorum.threads import ThreadInfo


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
    if infos:
        out.print(table)
    else:
        _no_threads(db)


def _no_threads(db: str | None) -> None:
    """Say there are no pattern threads, and which evals' threads there are instead."""
    evals = _run_async(threads_api.eval_ids(database=db))
    out.print("no pattern threads yet" if evals else "no threads yet")
    for eval_id, count in evals.items():
        out.print(
            f"eval {escape(eval_id)}: {count} threads, one per question and strategy; the "
            f"same `quorum eval` command with --id {escape(eval_id)} tables them"
        )


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
