"""Crash trials by the hundred: SIGKILL at random points, resume, judge from outside.

The same trials as `tests/test_crash_trials.py` (`quorum/testing/crash.py` runs and judges
them), in larger numbers: each pattern's clean run is measured first, then every trial runs
`quorum run` through the CLI against the scripted stub, SIGKILLs it at a random point (and,
with `--kills 2` or more, each resume before the last one too), resumes it until it exits 0,
and checks the final state, the requests the stub served and the usage recorded. Prints one
row per pattern and every failed trial as a reproduction.

Run from the repository root: `.venv/bin/python -m bench bench_crash [--trials 300]
[--kills 1] [--lanes 2] [--seed N] [--delay S] [--grace S] [--keep] [--json] [--out DIR]`.
Work goes in a temporary folder, removed at the end unless a trial failed or `--keep` is
given.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.harness import Measurement
from quorum.testing.crash import (
    DELAY,
    GRACE,
    PATTERN_INPUTS,
    Campaign,
    Verdict,
    describe,
    plan_trials,
    run_campaign,
)

COLUMNS = (
    ("pattern", "pattern", "the pattern (all: every trial)"),
    ("trials", "trials", "trials run"),
    ("kills", "kills", "SIGKILLs that landed on a live process"),
    (
        "resumed_ok",
        "ok",
        "trials that met every requirement (completed, same state, "
        "every request accounted for, usage right)",
    ),
    (
        "completed_at_kill",
        "done",
        "calls whose reply was written more than the grace before a kill",
    ),
    ("rerequested_completed", "again", "of those, requested again after the kill (must be 0)"),
    ("near_kill", "grace", "replies written within the grace before a kill"),
    ("rerequested_near_kill", "again", "of those, requested again (allowed)"),
    ("cut_off", "cut", "requests in flight at a kill (asked again, as they must be)"),
    ("resume_s", "resume s", "mean wall-clock seconds from the last kill to the resume's exit"),
)


def summarise(verdicts: list[Verdict]) -> dict[str, Any]:
    """One row of the table: totals over `verdicts`."""
    recoveries = [v.trial.recovery_seconds for v in verdicts if v.trial.kills]
    return {
        "trials": len(verdicts),
        "kills": sum(v.trial.kills for v in verdicts),
        "resumed_ok": sum(v.ok for v in verdicts),
        "completed_at_kill": sum(v.completed_at_kill for v in verdicts),
        "rerequested_completed": sum(len(v.rerequested_completed) for v in verdicts),
        "near_kill": sum(v.near_kill for v in verdicts),
        "rerequested_near_kill": sum(len(v.rerequested_near_kill) for v in verdicts),
        "cut_off": sum(v.cut_off for v in verdicts),
        "resume_s": round(statistics.fmean(recoveries), 2) if recoveries else 0.0,
    }


def report(campaign: Campaign) -> dict[str, Any]:
    """Per-pattern rows, the total, and what each clean run was."""
    rows = [
        {"pattern": pattern} | summarise([v for v in campaign.verdicts if v.baseline is baseline])
        for pattern, baseline in campaign.baselines.items()
    ]
    rows.append({"pattern": "all"} | summarise(campaign.verdicts))
    near = [before for v in campaign.verdicts for _, before in v.rerequested_near_kill]
    return {
        "rows": rows,
        "clean_runs": {
            p: {
                "requests": b.requests,
                "working_s": round(b.working, 3),
                "run_s": round(b.seconds, 2),
            }
            for p, b in campaign.baselines.items()
        },
        "latest_reply_asked_again_s": round(max(near), 4) if near else None,
        "failures": [describe(v) for v in campaign.verdicts if not v.ok],
        "seconds": round(campaign.seconds, 1),
    }


def table(result: dict[str, Any], args: argparse.Namespace) -> Iterator[str]:
    """The settings, the clean runs, a row per pattern, what each column means, the failures."""
    yield (
        f"crash trials: kill points per trial {args.kills}, stub delay {args.delay:g} s per reply, "
        f"grace {args.grace:g} s, {args.lanes} lanes, seed {args.seed}, "
        f"{result['seconds']:g} s in all"
    )
    for pattern, clean in result["clean_runs"].items():
        yield (
            f"  clean {pattern}: {clean['requests']} requests, {clean['working_s']} s from the "
            f"endpoint check to the result, {clean['run_s']} s per process"
        )
    widths = [max(len(title), 5) for _, title, _ in COLUMNS]
    widths[0] = 12
    for row in [{key: title for key, title, _ in COLUMNS}, *result["rows"]]:
        cells = [str(row[key]).rjust(w) for (key, _, _), w in zip(COLUMNS, widths, strict=True)]
        yield "  ".join([cells[0].strip().ljust(widths[0]), *cells[1:]])
    for _, title, meaning in COLUMNS[1:]:
        yield f"  {title}: {meaning}"
    latest = result["latest_reply_asked_again_s"]
    if latest is not None:
        # Negative: the stub stamped the reply written after the kill (within SLACK).
        yield f"oldest reply asked for again: written {latest * 1000:.1f} ms before its kill"
    for failure in result["failures"]:
        yield "\nFAILED " + failure


def arguments(parser: argparse.ArgumentParser) -> None:
    """How many trials, how they kill and how the stub answers."""
    parser.add_argument("--trials", type=int, default=300, help="in all, split over 4 patterns")
    parser.add_argument("--kills", type=int, default=1, help="kill points per trial")
    parser.add_argument("--lanes", type=int, default=2, help="trials run at once")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--delay", type=float, default=DELAY, help="stub seconds per reply")
    parser.add_argument("--grace", type=float, default=GRACE)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every trial; the work folder is kept if one failed or `--keep` asks."""
    per_pattern = math.ceil(args.trials / len(PATTERN_INPUTS))
    plans = plan_trials(PATTERN_INPUTS, per_pattern, seed=args.seed, kills=args.kills)
    root = Path(tempfile.mkdtemp(prefix="quorum-crash-"))
    done = 0

    def progress(verdict: Verdict) -> None:
        nonlocal done
        done += 1
        mark = "ok" if verdict.ok else "FAILED"
        trial = verdict.trial
        print(
            f"[{done}/{len(plans)}] {trial.plan.thread}: kills {trial.kills}, {mark}",
            file=sys.stderr,
            flush=True,
        )

    started = time.monotonic()
    campaign = run_campaign(
        root, plans, lanes=args.lanes, delay=args.delay, grace=args.grace, on_verdict=progress
    )
    result = report(campaign)
    result["seconds"] = round(time.monotonic() - started, 1)
    if result["failures"] or args.keep:
        print(f"work folder kept: {root}", file=sys.stderr)
    else:
        shutil.rmtree(root, ignore_errors=True)
    return result


MEASUREMENT = Measurement(
    "bench_crash",
    "SIGKILL trials by the hundred, each resumed and judged (exit 1 on a failure)",
    arguments,
    run,
    table=table,
    ok=lambda result: not result["failures"],
)
