"""The commands that run: `run`, `resume` (with its `--dry-run`), `approve`, `resolve`.

Also how a run ends on the terminal: the answer, the summary line and ledger, what waits.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.markup import escape
from rich.prompt import Prompt

import quorum
from quorum import Decision
from quorum.cli.progress import _Progress, _resume_progress
from quorum.cli.shell import (
    EXIT_CODES,
    DatabaseOption,
    JsonOption,
    PatternArgument,
    StreamOption,
    VerboseOption,
    _fail,
    _jsonable,
    _ledger_table,
    _parse_context,
    _run_async,
    _setting_values,
    _whole,
    app,
    err,
    out,
)
from quorum.errors import QuorumError, UsageError
from quorum.state import total_usage
from quorum.threads import ThreadInfo


def _summary(info: ThreadInfo) -> None:
    total = total_usage(info.usage)
    calls, tokens_in, tokens_out = total["calls"], total["input_tokens"], total["output_tokens"]
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
                quorum.resume(
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
        quorum.check_input(goal)
    except QuorumError as error:
        _fail(error)
    thread_id = thread or quorum.new_thread_id()
    # --json keeps stdout for the thread's JSON alone.
    with _Progress(context, stream=stream and not as_json, verbose=verbose) as progress:
        info = _run_async(
            quorum.run(
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
                quorum.preview(thread, database=db, settings=changed, checkpoint_id=checkpoint)
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


def _print_preview(seen: quorum.Preview) -> None:
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
            quorum.resume(
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
