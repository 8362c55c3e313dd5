"""Does a long-lived `langgraph dev` keep its memory flat over many runs?

```
.venv/bin/python -m bench server_memory [--runs 1000] [--warmup 50] [--every 100]
                                        [--concurrency 4] [--settle 2] [--delete-threads]
                                        [--out bench/results] [--json]
```

Under the LangGraph server nothing calls `quorum.metering.forget`, so every run leaves its
meter in the server process (bounded at `metering.MAX_METERS`), beside whatever else the
server, LangGraph and Quorum keep per run. This starts the scripted OpenAI stub
(`quorum/testing/stub.py`) and `langgraph dev` (`quorum/testing/langgraph_dev.py`: Quorum's
langgraph.json, loopback, a clean environment, no reload) in a temporary folder under
`bench/.tmp/`, drives `--runs` runs of the `react` graph through langgraph-sdk, each on a new
thread, `--concurrency` at a time, and samples the resident memory of the server's whole
process tree (VmRSS from /proc/<pid>/status, summed over the server and its descendants)
after `--warmup` runs and then every `--every` runs. With `--delete-threads` the threads of
the runs are deleted before each sample, which leaves out the thread and run records the
server's in-memory runtime keeps of every run. Before each sample the runs in flight finish
and the server idles for `--settle` seconds.

Reported: the RSS after the warm-up, at 500 and at the last run, the growth per 100 runs
(the least-squares slope over the warm-up sample and every one after it), runs per second
(driving time only, the pauses to sample excluded), and every sample with its per-process
breakdown, in a table and in `server_memory.json` under `--out`. The stub and the server are
stopped in every case, and the processes seen in the server's tree are checked to be gone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraph_sdk import get_client
from rich.table import Table

from bench.harness import BENCH, Measurement, machine, scratch
from quorum.testing.langgraph_dev import RUN_TIMEOUT, langgraph_dev
from quorum.testing.stub import STUB_MODEL, OpenAIStub

GRAPH = "react"
QUESTIONS = ("What is 2+2?", "What is 3+4?", "What is 6*7?", "What is 10-3?")


# --- Memory of a process tree ------------------------------------------------------------------


def _parents() -> dict[int, int]:
    """Every live process's parent, by pid."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after it.
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def tree(root: int) -> list[int]:
    """`root` and every live descendant of it."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _kib(value: str | None) -> int:
    """A /proc status size ('123456 kB') in KiB; 0 when missing (a kernel thread, a zombie)."""
    return int(value.split()[0]) if value else 0


@dataclass
class Process:
    """One process of the server's tree at a sample."""

    pid: int
    name: str
    rss_kib: int
    anon_kib: int


@dataclass
class Sample:
    """The server's memory after `runs` runs."""

    runs: int
    seconds: float
    """Since the first run was sent."""
    rss_kib: int
    anon_kib: int
    """RssAnon: the heap and other private memory, without mapped files and libraries."""
    processes: list[Process] = field(default_factory=list)


def sample(root: int, runs: int, seconds: float) -> Sample:
    """VmRSS and RssAnon summed over `root`'s process tree."""
    processes = []
    for pid in tree(root):
        status = _status(pid)
        if status:
            processes.append(
                Process(
                    pid,
                    status.get("Name", "?").strip(),
                    _kib(status.get("VmRSS")),
                    _kib(status.get("RssAnon")),
                )
            )
    return Sample(
        runs,
        round(seconds, 2),
        sum(p.rss_kib for p in processes),
        sum(p.anon_kib for p in processes),
        processes,
    )


def slope(points: list[tuple[float, float]]) -> float:
    """The least-squares slope of y over x."""
    if len(points) < 2:
        return 0.0
    xs, ys = zip(*points, strict=True)
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


# --- Driving the server ------------------------------------------------------------------------


@dataclass
class Driven:
    """What the runs did."""

    done: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    driving: float = 0.0
    """Seconds spent with runs in flight (the settling before each sample excluded)."""
    finished: list[str] = field(default_factory=list)
    """Threads whose run ended since the last sample (to delete, with `--delete-threads`)."""


async def one_run(client: Any, index: int, driven: Driven) -> None:
    """A `react` run on a new thread, to its end."""
    try:
        thread = await client.threads.create()
        driven.finished.append(thread["thread_id"])
        # A wedged server would leave `wait` waiting for good (its keep-alives reset the
        # HTTP timeout): bound the run, so the bench fails instead of hanging.
        values = await asyncio.wait_for(
            client.runs.wait(
                thread["thread_id"], GRAPH, input={"input": QUESTIONS[index % len(QUESTIONS)]}
            ),
            RUN_TIMEOUT,
        )
        if not isinstance(values, dict) or values.get("status") != "answered":
            raise RuntimeError(f"run ended without an answer: {str(values)[:300]}")
    except Exception as error:  # counted and shown; the bench stops if too many fail
        driven.failed += 1
        if len(driven.errors) < 5:
            driven.errors.append(f"run {index}: {type(error).__name__}: {error}"[:500])
    finally:
        driven.done += 1


async def gated(gate: asyncio.Semaphore, client: Any, index: int, driven: Driven) -> None:
    """`one_run` once `gate` lets it in."""
    async with gate:
        await one_run(client, index, driven)


async def delete_threads(client: Any, thread_ids: list[str]) -> None:
    """Delete threads whose runs have ended, each once the server is done with it.

    `runs.wait` returns with the run's values before the server's worker has finished its
    own bookkeeping on the thread; a thread deleted in between fails that worker ("Thread
    ... not found") and leaves the in-memory runtime's queue counting a run that never ends,
    so no later run starts. So each thread is deleted only once it is no longer `busy`.
    """
    for thread_id in thread_ids:
        deadline = time.monotonic() + RUN_TIMEOUT
        while (await client.threads.get(thread_id))["status"] == "busy":
            if time.monotonic() > deadline:
                raise RuntimeError(f"thread {thread_id} still busy after {RUN_TIMEOUT:.0f} s")
            await asyncio.sleep(0.05)
        await client.threads.delete(thread_id)


async def drive(
    url: str,
    root: int,
    marks: list[int],
    args: argparse.Namespace,
    stub: OpenAIStub,
) -> tuple[list[Sample], Driven, set[int]]:
    """Run up to each mark in turn, `concurrency` at a time, and sample after each."""
    driven = Driven()
    gate = asyncio.Semaphore(args.concurrency)
    samples: list[Sample] = []
    seen: set[int] = set()
    started = time.perf_counter()
    async with get_client(url=url, api_key=None, timeout=RUN_TIMEOUT) as client:
        for mark in marks:
            began = time.perf_counter()
            todo = range(driven.done, mark)
            await asyncio.gather(*(gated(gate, client, i, driven) for i in todo))
            driven.driving += time.perf_counter() - began
            stub.reset()  # the stub keeps every request: keep this process flat too
            finished, driven.finished = driven.finished, []
            if args.delete_threads:
                await delete_threads(client, finished)
            await asyncio.sleep(args.settle)
            taken = sample(root, mark, time.perf_counter() - started)
            samples.append(taken)
            seen.update(p.pid for p in taken.processes)
            rate = driven.done / driven.driving if driven.driving else 0.0
            print(
                f"  {mark:>6} runs  RSS {taken.rss_kib / 1024:8.1f} MiB  "
                f"anon {taken.anon_kib / 1024:8.1f} MiB  "
                f"{len(taken.processes)} processes  {rate:5.1f} runs/s  "
                f"{driven.failed} failed",
                file=sys.stderr,
                flush=True,
            )
            if driven.failed > max(5, driven.done // 20):
                raise RuntimeError(
                    f"{driven.failed} of {driven.done} runs failed:\n" + "\n".join(driven.errors)
                )
    return samples, driven, seen


def marks_for(runs: int, warmup: int, every: int) -> list[int]:
    """The run counts to sample at: the warm-up, every `every`, and the last run."""
    marks = [min(warmup, runs)]
    marks += [m for m in range(every, runs + 1, every) if m > marks[0]]
    if marks[-1] != runs:
        marks.append(runs)
    return marks


def leftovers(pids: set[int]) -> list[int]:
    """The pids among `pids` still alive (and not reused by an unrelated process since)."""
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            continue  # reused by someone else's process: not ours
        alive.append(pid)
    return alive


# --- Report ------------------------------------------------------------------------------------


def _mib(kib: float) -> str:
    return f"{kib / 1024:,.1f} MiB"


def at(samples: list[Sample], runs: int) -> Sample | None:
    """The sample taken after `runs` runs, if one was."""
    return next((s for s in samples if s.runs == runs), None)


def summary(samples: list[Sample], driven: Driven, runs: int) -> dict[str, Any]:
    """The headline figures."""
    warm, mid, last = samples[0], at(samples, 500), samples[-1]
    rss_per_100 = slope([(s.runs, s.rss_kib) for s in samples]) * 100
    anon_per_100 = slope([(s.runs, s.anon_kib) for s in samples]) * 100
    return {
        "runs": runs,
        "failed": driven.failed,
        "warmup_runs": warm.runs,
        "rss_after_warmup_kib": warm.rss_kib,
        "rss_at_500_kib": mid.rss_kib if mid else None,
        "rss_at_end_kib": last.rss_kib,
        "rss_growth_kib_per_100_runs": round(rss_per_100, 1),
        "anon_growth_kib_per_100_runs": round(anon_per_100, 1),
        "rss_growth_end_minus_warmup_kib": last.rss_kib - warm.rss_kib,
        "runs_per_second": round(driven.done / driven.driving, 2) if driven.driving else None,
        "driving_seconds": round(driven.driving, 1),
    }


def table(result: dict[str, Any], _args: argparse.Namespace) -> Iterator[Table]:
    """The samples and the headline as tables."""
    samples: list[Sample] = result["samples"]
    headline = result["summary"]
    grid = Table(title=f"langgraph dev memory over {headline['runs']} {GRAPH} runs")
    for column in ("runs", "s", "RSS", "RssAnon", "RSS vs warm-up", "processes"):
        grid.add_column(column, justify="right")
    base = samples[0].rss_kib
    for s in samples:
        parts = ", ".join(f"{p.name}:{p.pid} {p.rss_kib / 1024:.0f}" for p in s.processes)
        grid.add_row(
            str(s.runs),
            f"{s.seconds:,.0f}",
            _mib(s.rss_kib),
            _mib(s.anon_kib),
            f"{(s.rss_kib - base) / 1024:+,.1f} MiB",
            parts,
        )
    yield grid
    mid = headline["rss_at_500_kib"]
    lines = Table(title="Summary", show_header=False)
    lines.add_column("what")
    lines.add_column("value", justify="right")
    lines.add_row(f"RSS after warm-up ({headline['warmup_runs']} runs)", _mib(base))
    lines.add_row("RSS at 500 runs", _mib(mid) if mid is not None else "(not reached)")
    lines.add_row(f"RSS at {headline['runs']} runs", _mib(headline["rss_at_end_kib"]))
    lines.add_row(
        "growth per 100 runs (least squares, RSS)",
        f"{headline['rss_growth_kib_per_100_runs'] / 1024:+,.2f} MiB",
    )
    lines.add_row(
        "growth per 100 runs (least squares, RssAnon)",
        f"{headline['anon_growth_kib_per_100_runs'] / 1024:+,.2f} MiB",
    )
    lines.add_row("runs per second", f"{headline['runs_per_second']}")
    lines.add_row("failed runs", str(headline["failed"]))
    yield lines


# --- The measurement ---------------------------------------------------------------------------


def measure(args: argparse.Namespace, folder: Path) -> tuple[list[Sample], Driven]:
    """Start the stub and the server in `folder`, drive the runs, stop both."""
    seen: set[int] = set()
    server_pid = None
    try:
        with OpenAIStub() as stub:
            settings = {
                "QUORUM_BASE_URL": stub.base_url,
                "QUORUM_API_KEY": "bench",
                "QUORUM_MODEL": STUB_MODEL,
                "QUORUM_MAX_ATTEMPTS": "1",
                "QUORUM_DATA_DIR": str(folder / "data"),
            }
            started = time.perf_counter()
            with langgraph_dev(folder, settings) as served:
                assert served.process is not None
                server_pid = served.process.pid
                seen.update(tree(server_pid))
                print(
                    f"langgraph dev ready at {served.url} in "
                    f"{time.perf_counter() - started:.1f} s (pid {server_pid}); "
                    f"stub at {stub.base_url}",
                    file=sys.stderr,
                    flush=True,
                )
                marks = marks_for(args.runs, args.warmup, args.every)
                samples, driven, more = asyncio.run(
                    drive(served.url, server_pid, marks, args, stub)
                )
                seen |= more
                seen.update(tree(server_pid))
    finally:
        # langgraph_dev's teardown ended the server's process group; anything of its tree
        # still alive (a process that left the group) is ended here, by its own pid.
        alive = leftovers(seen)
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if alive:
            print(f"killed leftover server processes: {sorted(alive)}", file=sys.stderr)
        if server_pid is not None and leftovers({server_pid}):
            print(f"server process {server_pid} still alive after teardown", file=sys.stderr)
    return samples, driven


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def arguments(parser: argparse.ArgumentParser) -> None:
    """How many runs, when to sample, how many at once; the report goes to bench/results."""
    parser.add_argument(
        "--runs", type=_at_least_one, default=1000, help="runs to drive (default 1000)"
    )
    parser.add_argument(
        "--warmup", type=_at_least_one, default=50, help="runs before the first sample"
    )
    parser.add_argument("--every", type=_at_least_one, default=100, help="runs between samples")
    parser.add_argument(
        "--concurrency", type=_at_least_one, default=4, help="runs in flight at once"
    )
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds the server idles before a sample"
    )
    parser.add_argument(
        "--delete-threads",
        action="store_true",
        help="delete the runs' threads before each sample, so the server's own thread and "
        "run records (the in-memory runtime keeps every one) do not count",
    )
    parser.set_defaults(out=BENCH / "results")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Drive the runs in a fresh folder under bench/.tmp; the samples, with what the run was."""
    started = time.perf_counter()
    with scratch("server-memory-") as folder:
        samples, driven = measure(args, folder)
    return {
        **machine(),
        "graph": GRAPH,
        "runs": args.runs,
        "warmup": args.warmup,
        "every": args.every,
        "concurrency": args.concurrency,
        "settle_seconds": args.settle,
        "delete_threads": args.delete_threads,
        "seconds": round(time.perf_counter() - started, 1),
        "summary": summary(samples, driven, args.runs),
        "errors": driven.errors,
        "samples": samples,
    }


MEASUREMENT = Measurement(
    "server_memory",
    "a long-lived langgraph dev's resident memory over many runs (server_memory.json)",
    arguments,
    run,
    table=table,
)
