"""The suite's rows: interleaved timing, rows with targets, and their table, Markdown and chart.

Every comparison runs its two sides in the same rounds, A then B then B then A ..., so a
burst of load on a shared machine hits both alike; a row's figure is the median over the
rounds and its ratio is the ratio of the two medians of that one run.
"""

from __future__ import annotations

import operator
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
}


@dataclass(frozen=True)
class Target:
    """What a row must reach: `of` (the ratio, or Quorum's own figure) `op` `limit`."""

    op: str
    limit: float
    of: str = "ratio"

    def __str__(self) -> str:
        return f"{self.of} {self.op} {self.limit:g}"


@dataclass
class Row:
    """One line of the suite's table."""

    name: str
    quorum: float
    baseline: float | None
    unit: str
    target: Target | None = None
    baseline_name: str = ""
    database: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """Quorum's figure over the baseline's."""
        if self.baseline in (None, 0):
            return None
        return self.quorum / self.baseline

    @property
    def met(self) -> bool | None:
        """Whether the target is reached (None: the row has no target)."""
        if self.target is None:
            return None
        value = self.ratio if self.target.of == "ratio" else self.quorum
        return value is not None and _OPS[self.target.op](value, self.target.limit)

    def to_json(self) -> dict[str, Any]:
        """The row as the JSON report keeps it."""
        data = asdict(self)
        data["target"] = str(self.target) if self.target else None
        data["ratio"] = None if self.ratio is None else round(self.ratio, 4)
        data["met"] = self.met
        return data


async def interleaved(
    sides: dict[str, Callable[[], Awaitable[float]]], rounds: int
) -> dict[str, list[float]]:
    """Run every side once per round, the order reversed every other round.

    Each side returns its own measurement (seconds, say); the first round warms up and is
    dropped.
    """
    samples: dict[str, list[float]] = {name: [] for name in sides}
    order = list(sides)
    for round_ in range(rounds + 1):
        for name in order if round_ % 2 else reversed(order):
            value = await sides[name]()
            if round_:
                samples[name].append(value)
    return samples


async def timed(work: Callable[[], Awaitable[Any]]) -> float:
    """Seconds `work` takes."""
    started = time.perf_counter()
    await work()
    return time.perf_counter() - started


def median(values: list[float]) -> float:
    """The median of `values`."""
    return statistics.median(values)


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit == "s":
        if value < 1e-3:
            return f"{value * 1e6:,.0f} us"
        return f"{value * 1e3:,.1f} ms" if value < 1 else f"{value:,.2f} s"
    if unit == "B":
        return f"{value / 1e6:,.2f} MB" if value >= 1e5 else f"{value / 1e3:,.1f} kB"
    return f"{value:,.4g} {unit}".strip()


def rows_table(rows: list[Row]) -> Table:
    """The rows as a table for the terminal."""
    table = Table(title="Quorum benchmark suite")
    for column in ("what", "db", "Quorum", "baseline", "ratio", "target", "met"):
        table.add_column(column, justify="left" if column in ("what", "target") else "right")
    for row in rows:
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: ""}[row.met]
        table.add_row(
            row.name,
            row.database,
            _fmt(row.quorum, row.unit),
            (_fmt(row.baseline, row.unit) + f" ({row.baseline_name})" if row.baseline_name else "")
            if row.baseline is not None
            else "",
            "" if row.ratio is None else f"{row.ratio:.2f}",
            str(row.target or ""),
            met,
        )
    return table


def markdown(rows: list[Row]) -> str:
    """The rows as a Markdown table, for the README."""
    lines = [
        "| what | db | Quorum | baseline | ratio | target | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        baseline = "" if row.baseline is None else _fmt(row.baseline, row.unit)
        if baseline and row.baseline_name:
            baseline += f" ({row.baseline_name})"
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}"
        met = {True: "yes", False: "**no**", None: ""}[row.met]
        cells = [row.name, row.database, _fmt(row.quorum, row.unit), baseline, ratio]
        lines.append("| " + " | ".join([*cells, str(row.target or ""), met]) + " |")
    return "\n".join(lines) + "\n"


def write_chart(rows: list[Row], path: Path) -> None:
    """A bar per row with a ratio target: the ratio, and the target as a tick."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.ratio is not None and r.target and r.target.of == "ratio"]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(shown) + 1.5))
    labels = [f"{r.name} [{r.database}]" if r.database else r.name for r in shown]
    colours = ["tab:green" if r.met else "tab:red" for r in shown]
    ax.barh(labels, [r.ratio or 0 for r in shown], color=colours)
    for y, row in enumerate(shown):
        assert row.target is not None
        ax.plot([row.target.limit] * 2, [y - 0.4, y + 0.4], color="black", linewidth=2)
    ax.invert_yaxis()
    ax.set_xlabel("ratio Quorum / baseline (black tick: target; green: met)")
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
