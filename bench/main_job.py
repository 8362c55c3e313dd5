"""The main job's answers on five goals: does the orchestrator's answer read as an answer?

`python -m bench main_job [--quorum CMD] [--goals 1,3] [--out DIR]` runs `quorum run
orchestrator GOAL` with the Makefile's `RUN_SETTINGS` on each of five decision goals (the
embedded default model unless an endpoint is set), through the command line as a user does,
and judges each answer from its text alone:

- `options`: the goal's options the answer names (each goal compares two);
- `recommends`: it recommends (the words the default-model test looks for);
- `trade-offs`: it weighs something against something (a downside, a "however", a trade-off);
- `repeated`: paragraphs, and sentences of six words or more, said twice (after folding case
  and spaces): the main job once copied its first paragraph under "Conclusion";
- `words`, `seconds`, and the tokens the CLI's summary line reports.

`--quorum` is the command that runs Quorum (default: this checkout's `quorum`), so the same
goals can be put to another checkout for a before-and-after (`--quorum "env
PYTHONPATH=../old ../old/.venv/bin/quorum"`). These goals are not among the conformance
bench's or the tests' goals.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.harness import Measurement

GOALS: list[tuple[str, list[str]]] = [
    (
        "Should a two-person team run its background jobs with Celery or with a queue table "
        "in the PostgreSQL database it already has?",
        [r"celery", r"postgres"],
    ),
    (
        "Choose between REST and gRPC for the internal calls of a ten-service company",
        [r"\brest\b", r"grpc"],
    ),
    (
        "Should a data team keep a year of event logs as Parquet files on object storage or "
        "load them into ClickHouse?",
        [r"parquet", r"clickhouse"],
    ),
    (
        "Decide between server-side rendering and a single-page app for a content-heavy "
        "marketing site",
        [r"server[- ]side|\bssr\b", r"single[- ]page|\bspa\b"],
    ),
    (
        "Pick Python or Go for a command-line tool a small operations team will maintain",
        [r"python", r"\bgo\b|golang"],
    ),
]
"""Each goal and a pattern for each of the two options it weighs."""

RUN_SETTINGS = ["--set", "max_plan_steps=3", "--set", "max_tool_calls=1"]
"""The Makefile's: the main job sized for the embedded model."""

RECOMMENDS = re.compile(r"\brecommend|\bchoose\b|\bgo with\b|\bbetter (choice|fit|option)", re.I)
TRADE_OFFS = re.compile(
    r"trade-?offs?|downside|drawback|however|at the cost|in exchange|on the other hand", re.I
)
TOKENS = re.compile(r"status (\w+)\s+tokens ([\d,]+)")


def _fold(text: str) -> str:
    return " ".join(text.split()).lower()


def repeated(answer: str) -> list[str]:
    """Paragraphs, and sentences of six words or more, the answer says more than once."""
    paragraphs = [_fold(p) for p in re.split(r"\n\s*\n", answer) if p.strip()]
    sentences = [_fold(s) for s in re.split(r"(?<=[.!?])\s+|\n", answer) if len(s.split()) >= 6]
    seen: set[str] = set()
    twice: list[str] = []
    for unit in paragraphs + sentences:
        if unit in seen and unit not in twice:
            twice.append(unit)
        seen.add(unit)
    return twice


def judge(answer: str, options: list[str]) -> dict[str, Any]:
    """What an answer does, read from its text."""
    return {
        "options": sum(bool(re.search(o, answer, re.I)) for o in options),
        "of_options": len(options),
        "recommends": bool(RECOMMENDS.search(answer)),
        "trade_offs": bool(TRADE_OFFS.search(answer)),
        "repeated": repeated(answer),
        "words": len(answer.split()),
    }


def run_goal(quorum: list[str], goal: str, options: list[str], folder: Path) -> dict[str, Any]:
    """One main job through the command line, judged."""
    started = time.monotonic()
    done = subprocess.run(
        [*quorum, "run", "orchestrator", goal, *RUN_SETTINGS],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    seconds = time.monotonic() - started
    summary = TOKENS.search(done.stderr)
    answer = done.stdout.strip()
    return {
        "goal": goal,
        "exit": done.returncode,
        "status": summary.group(1) if summary else "",
        "tokens": int(summary.group(2).replace(",", "")) if summary else None,
        "seconds": round(seconds, 1),
        **judge(answer, options),
        "answer": answer,
        "stderr_tail": "" if done.returncode == 0 else done.stderr[-2000:],
    }


def table(result: dict[str, Any], _args: argparse.Namespace) -> Iterator[str]:
    """One line per goal."""
    yield "| goal | status | options | recommends | trade-offs | repeated | words | tokens | s |"
    yield "| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: |"
    for row in result["goals"]:
        yield (
            f"| {row['goal'][:48]} | {row['status'] or row['exit']} | "
            f"{row['options']}/{row['of_options']} | {'yes' if row['recommends'] else 'no'} | "
            f"{'yes' if row['trade_offs'] else 'no'} | {len(row['repeated'])} | {row['words']} | "
            f"{row['tokens'] or ''} | {row['seconds']:.0f} |"
        )


def arguments(parser: argparse.ArgumentParser) -> None:
    """The command that runs Quorum, and which goals."""
    parser.add_argument("--quorum", default=str(Path(sys.executable).with_name("quorum")))
    parser.add_argument("--goals", default="", help="1-based goal numbers, e.g. 1,3 (default all)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Each chosen goal through the command line, judged."""
    chosen = [int(n) for n in args.goals.split(",") if n] or list(range(1, len(GOALS) + 1))
    quorum = shlex.split(args.quorum)
    rows = [run_goal(quorum, *GOALS[n - 1], Path.cwd()) for n in chosen]
    return {"command": args.quorum, "goals": rows}


MEASUREMENT = Measurement(
    "main_job",
    "the main job's answers on five decision goals, judged from their text",
    arguments,
    run,
    table=table,
)
