"""The eval's report: one row per strategy, printed as a table, saved as JSON, drawn as a PNG.

A row gives accuracy with its Wilson 95% interval, input and output tokens, cost, wall time,
invalid answers (finished without a well-formed answer: wrong, but not wrongly worked),
failures and the questions not run; every strategy but `single` is compared with `single` on
the questions both answered (exact McNemar test). The JSON keeps every question's answer,
expected answer, correctness, tokens and thread id, so any number can be checked by hand and
any answer traced to its thread (`quorum show` reads pattern threads; the eval's own are in
the same store).
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from quorum import models
from quorum.embedded import model_alias
from quorum.evals.harness import EvalResult
from quorum.evals.statistics import Paired, paired, wilson
from quorum.settings import get_settings

BASELINE = "single"


@dataclass(frozen=True)
class StrategyRow:
    """How one strategy did over the questions it was measured on."""

    strategy: str
    questions: int
    correct: int
    accuracy: float
    low: float
    high: float
    """Wilson 95% interval of the accuracy."""
    input_tokens: int
    output_tokens: int
    cost_usd: float
    seconds: float
    invalid: int
    """Questions it finished without a well-formed answer (counted wrong)."""
    failures: int
    not_run: int
    vs_single: Paired | None

    @property
    def tokens_per_question(self) -> float:
        """Mean input plus output tokens per measured question."""
        return (self.input_tokens + self.output_tokens) / self.questions if self.questions else 0


def rows(result: EvalResult) -> list[StrategyRow]:
    """One row per strategy, in the order the strategies were given."""
    baseline = {r.index: r for r in result.of(BASELINE) if r.measured}
    found = []
    for strategy in result.strategies:
        mine = [r for r in result.of(strategy) if r.measured]
        correct = sum(r.correct for r in mine)
        low, high = wilson(correct, len(mine))
        comparison = None
        if strategy != BASELINE and baseline:
            both = [r for r in mine if r.index in baseline]
            comparison = paired(
                [baseline[r.index].correct for r in both], [r.correct for r in both]
            )
        found.append(
            StrategyRow(
                strategy=strategy,
                questions=len(mine),
                correct=correct,
                accuracy=correct / len(mine) if mine else 0.0,
                low=low,
                high=high,
                input_tokens=sum(r.input_tokens for r in mine),
                output_tokens=sum(r.output_tokens for r in mine),
                cost_usd=round(sum(r.cost_usd for r in mine), 8),
                seconds=round(sum(r.seconds for r in mine), 3),
                invalid=sum(r.status == "invalid" for r in mine),
                failures=sum(r.status == "failed" for r in mine),
                not_run=sum(not r.measured for r in result.of(strategy)),
                vs_single=comparison,
            )
        )
    return found


def table(result: EvalResult) -> Table:
    """The rows as a rich table."""
    title = f"quorum eval {result.eval_id}: {len(result.questions)} questions"
    grid = Table(
        title=title,
        caption=f"vs {BASELINE}: questions only it / only {BASELINE} got right, exact McNemar "
        "p-value; * significant at 5%",
    )
    for name in ("strategy", "accuracy", "95% CI", "in tok", "out tok", "cost $", "seconds",
                 "invalid", "failed", "not run", f"vs {BASELINE}"):  # fmt: skip
        grid.add_column(name, justify="left" if name == "strategy" else "right", no_wrap=True)
    for row in rows(result):
        grid.add_row(
            row.strategy,
            f"{row.accuracy:.1%} ({row.correct}/{row.questions})",
            f"{row.low:.1%}-{row.high:.1%}",
            f"{row.input_tokens:,}",
            f"{row.output_tokens:,}",
            f"{row.cost_usd:.4f}",
            f"{row.seconds:.1f}",
            str(row.invalid),
            str(row.failures),
            str(row.not_run),
            _comparison(row.vs_single),
        )
    return grid


def _comparison(pair: Paired | None) -> str:
    if pair is None:
        return "-"
    mark = " *" if pair.significant else ""
    return f"+{pair.only_strategy}/-{pair.only_baseline} p={pair.p_value:.3g}{mark}"


def environment() -> dict[str, Any]:
    """Where the eval ran: date, machine and endpoint."""
    settings = get_settings()
    embedded = models.endpoint(settings).embedded
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}",
        "endpoint": "embedded" if embedded else settings.base_url or "OpenAI",
        "model": f"{model_alias(settings)} (embedded)" if embedded else settings.model,
    }


def as_json(result: EvalResult) -> dict[str, Any]:
    """The whole result as plain data: rows, settings and every question."""
    return {
        "eval_id": result.eval_id,
        **environment(),
        "questions": len(result.questions),
        "strategies": [
            {**asdict(row), "tokens_per_question": row.tokens_per_question} for row in rows(result)
        ],
        "settings": result.context,
        "stopped": result.stopped,
        "results": [
            {
                "strategy": r.strategy,
                "index": r.index,
                "question": r.question,
                "expected": r.expected,
                "answer": r.answer,
                "correct": r.correct,
                "status": r.status,
                "calls": r.calls,
                "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens,
                "cost_usd": r.cost_usd,
                "seconds": r.seconds,
                "thread_id": r.thread_id,
                "error": r.error,
            }
            for r in result.results
        ],
    }


def write_json(result: EvalResult, path: Path) -> None:
    """Save the result as JSON."""
    path.write_text(json.dumps(as_json(result), indent=2) + "\n", encoding="utf-8")


def draw(result: EvalResult, path: Path) -> None:
    """A PNG of accuracy (with its 95% interval) against mean tokens per question."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file only
    from matplotlib import pyplot

    found = [row for row in rows(result) if row.questions]
    figure, axes = pyplot.subplots(figsize=(7, 4.5), dpi=120)
    try:
        for row in found:
            x, y = row.tokens_per_question, row.accuracy
            axes.errorbar(
                [x], [y], yerr=[[y - row.low], [row.high - y]], fmt="o", capsize=4,
                label=row.strategy,
            )  # fmt: skip
            axes.annotate(row.strategy, (x, y), textcoords="offset points", xytext=(6, 6))
        axes.set_xlabel("tokens per question (input + output)")
        axes.set_ylabel("accuracy (95% Wilson interval)")
        axes.set_ylim(-0.02, 1.08)
        axes.margins(x=0.15)  # room for the labels
        axes.set_title(f"{result.eval_id}: {len(result.questions)} questions")
        axes.grid(alpha=0.3)
        if found:
            axes.legend(loc="best", fontsize="small")
        figure.tight_layout()
        figure.savefig(path)
    finally:
        pyplot.close(figure)
