"""What `quorum eval` does around the harness: choose the questions, show progress, save.

The command itself is registered in `quorum.cli`; this module keeps its parts out of the
CLI module so the command there stays a few lines.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape

from quorum.errors import UsageError
from quorum.evals.harness import EvalResult, QuestionResult
from quorum.evals.questions import GENERATED, Question, load_jsonl
from quorum.evals.report import draw, table, write_json
from quorum.evals.strategies import STRATEGIES

DEFAULT_STRATEGIES = "single,self-consistency,debate"


def question_set(name: str, count: int, seed: int) -> list[Question]:
    """A generated set by name (`count` questions from `seed`), or a JSONL file's questions."""
    if name in GENERATED:
        if count < 1:
            raise UsageError("--count must be at least 1")
        return GENERATED[name](count, seed)
    path = Path(name)
    if not path.is_file():
        raise UsageError(
            f"no question set or file {name!r}",
            hint=f"use {' or '.join(GENERATED)}, or the path of a JSONL file",
        )
    return load_jsonl(path)


def strategy_list(text: str) -> list[str]:
    """The strategies named in a comma-separated list, each once, checked."""
    chosen = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    unknown = [s for s in chosen if s not in STRATEGIES]
    if unknown or not chosen:
        raise UsageError(
            f"unknown strategy {', '.join(unknown)}" if unknown else "no strategy chosen",
            hint=f"choose from: {', '.join(STRATEGIES)}",
        )
    return chosen


class Progress:
    """Prints each question as a strategy finishes it."""

    def __init__(self, console: Console, eval_id: str, total: int) -> None:
        self.console = console
        self.total = total
        self.results: list[QuestionResult] = []
        """Every answer finished so far: what a stopped eval's table is made of."""
        # Said first, so a Ctrl-C or a crash leaves the way back on the screen.
        console.print(
            f"eval {eval_id}: running {total} answers. If it is interrupted, the same command "
            f"(or --id {eval_id}) picks up where it left off."
        )

    def __call__(self, result: QuestionResult) -> None:
        """Print one finished question."""
        self.results.append(result)
        mark = (
            "[green]✓[/green]"
            if result.correct
            else "[yellow]?[/yellow]"
            if result.status == "invalid"
            else "[red]✗[/red]"
        )
        note = " (finished earlier)" if result.reused else ""
        detail = f"answer {_brief(result.answer)}" if result.answer else result.error
        self.console.print(
            f"  {mark} [{len(self.results)}/{self.total}] {result.strategy} q{result.index + 1}: "
            f"{escape(str(detail))}, expected {escape(str(result.expected))}, "
            f"{result.tokens:,} tokens{note}"
        )


def _brief(answer: str, limit: int = 60) -> str:
    return repr(answer if len(answer) <= limit else answer[:limit] + "…")


def save(result: EvalResult, out: Path, stdout: Console, stderr: Console) -> None:
    """Print the table, and write `eval.json` and `eval.png` into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    if not stdout.is_terminal:  # piped: no width to fit, so keep every column whole
        stdout = Console(file=stdout.file, width=160, highlight=False)
    stdout.print(table(result))
    write_json(result, out / "eval.json")
    draw(result, out / "eval.png")
    stderr.print(f"wrote {out / 'eval.json'} and {out / 'eval.png'}")
    if result.stopped:
        stderr.print(
            f"[yellow]stopped early:[/yellow] {escape(result.stopped)}; the table covers the "
            "questions measured. The same command goes on from there (with a larger budget, "
            "if a budget stopped it)."
        )
    else:
        stderr.print(f"eval {result.eval_id}: the same command again reuses every answer")
