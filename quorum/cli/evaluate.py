"""`quorum eval`: compare strategies on questions with exact answers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from quorum.cli.shell import DatabaseOption, _fail, _parse_context, _run_async, app, err, out
from quorum.errors import QuorumError
from quorum.evals import STRATEGIES, run_eval
from quorum.evals.command import DEFAULT_STRATEGIES, Progress, question_set, save, strategy_list
from quorum.evals.harness import as_far_as_done, eval_id_for


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
    work = run_eval(chosen, names, context=context, eval_id=eval_id, database=db,
                    concurrency=concurrency, max_tokens=max_tokens, max_cost_usd=max_cost,
                    on_result=progress)  # fmt: skip
    try:
        result = _run_async(work)
    except typer.Exit as stop:
        # Stopped by Ctrl-C or SIGTERM: the answers finished so far are kept, and tabled.
        if stop.exit_code in (130, 143) and progress.results:
            why = "stopped by Ctrl-C or SIGTERM"
            save(
                as_far_as_done(eval_id, names, chosen, progress.results, context, why),
                out_dir or Path(eval_id), out, err,
            )  # fmt: skip
        raise
    save(result, out_dir or Path(eval_id), out, err)
    if result.stopped:
        raise typer.Exit(4)
