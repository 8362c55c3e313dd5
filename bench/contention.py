"""The embedded model's reply time beside another busy process, per thread wait policy.

llama.cpp runs its threads under OpenMP, which by default spins between the steps of a
reply. On a small machine where anything else is busy (a worker process, a test, a second
run) the spinning threads and the busy one fight for the cores. Quorum starts the server with
`QUORUM_EMBEDDED_WAIT_POLICY=passive` (OMP_WAIT_POLICY): idle threads sleep.

For each policy (`passive`, `active`; `--policies`) and each number of threads (`--threads`,
default every core) a server of the chosen model is started, and the same
prompts are asked with nothing else running, then beside `--busy` busy loops (one process
each, pure CPU), in turn: policy A idle, A busy, then B idle, B busy, and in reverse order on
the next repeat. Measured from outside: the wall time of each request at the client. The
server's environment is read from /proc to confirm the policy it runs with. Every process
started is gone at the end, also on failure.

Run from the repository root: `.venv/bin/python -m bench contention [--repeats 1] [--busy 1]
[--policies passive active] [--threads N ...] [--model qwen2.5-coder-1.5b] [--max-tokens 64]
[--json] [--out DIR]`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.harness import BENCH, Measurement, add_model, add_repeats, embedded_data_dir
from bench.rows import median
from quorum import embedded
from quorum.settings import Settings

PROMPTS = [
    f"Explain in detail how gear number {n} of a bicycle works, step by step." for n in range(3)
]


def _spin() -> None:
    while True:
        pass


@contextmanager
def busy(processes: int) -> Iterator[None]:
    """`processes` pure-CPU loops, each its own process, for the block's duration."""
    loops = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(processes)]
    for loop in loops:
        loop.start()
    try:
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.join()


def replies(server: embedded.EmbeddedServer, max_tokens: int) -> list[float]:
    """Seconds for each prompt's reply, asked one after another."""
    times = []
    for prompt in PROMPTS:
        body = {
            "model": server.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "max_tokens": max_tokens,
        }
        started = time.monotonic()
        httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=900).raise_for_status()
        times.append(time.monotonic() - started)
    return times


def measure(
    policy: str, model: str, max_tokens: int, loops: int, root: Path, threads: int | None = None
) -> dict[str, Any]:
    """One server with `policy` (and `threads`): reply times idle, then beside `loops` busy
    processes."""
    with tempfile.TemporaryDirectory(dir=root) as folder:
        data = embedded_data_dir(Path(folder))
        settings = Settings(
            data_dir=data,
            embedded_model=model,
            embedded_wait_policy=policy,
            embedded_threads=threads,
        )
        server = embedded.start(settings)
        try:
            assert server.process is not None
            environ = Path(f"/proc/{server.process.pid}/environ").read_bytes().split(b"\0")
            running = [e.decode() for e in environ if e.startswith(b"OMP_WAIT_POLICY=")]
            idle = replies(server, max_tokens)
            with busy(loops):
                loaded = replies(server, max_tokens)
        finally:
            server.stop()
    return {
        "policy": policy,
        "threads": threads,
        "server_env": running,
        "idle_s": idle,
        "busy_s": loaded,
    }


def arguments(parser: argparse.ArgumentParser) -> None:
    """Repeats, the model and its output cap, the busy loops, threads and policies."""
    add_repeats(parser, 1)
    add_model(parser, max_tokens=64)
    parser.add_argument("--busy", type=int, default=1, help="busy processes (default 1)")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[None],
        help="the server's threads, each a server of its own (default: every core)",
    )
    parser.add_argument(
        "--policies", nargs="+", default=["passive", "active"], choices=["passive", "active"]
    )


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every policy and thread count, in turns; the order reversed every other repeat."""
    root = BENCH / ".tmp"
    root.mkdir(exist_ok=True)
    results = []
    for repeat in range(args.repeats):
        sides = [(policy, threads) for policy in args.policies for threads in args.threads]
        for policy, threads in sides if repeat % 2 == 0 else reversed(sides):
            results.append(measure(policy, args.model, args.max_tokens, args.busy, root, threads))
    return results


def table(results: list[dict[str, Any]], args: argparse.Namespace) -> Iterator[str]:
    """A line per server: its policy, threads, and reply times idle and beside the busy loops."""
    for r in results:
        yield (
            f"{r['policy']:8} threads {r['threads'] or 'all'} {r['server_env']}: "
            f"idle median {median(r['idle_s']):.2f} s "
            f"{[round(t, 2) for t in r['idle_s']]}, beside {args.busy} busy median "
            f"{median(r['busy_s']):.2f} s {[round(t, 2) for t in r['busy_s']]}"
        )


MEASUREMENT = Measurement(
    "contention",
    "the embedded model's reply time beside busy processes, per thread wait policy",
    arguments,
    run,
    table=table,
)
