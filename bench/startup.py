"""What a `quorum` command costs to start, with the install compiled to bytecode and without.

Where PYTHONDONTWRITEBYTECODE is set (many containers and CI images set it, this machine
too), Python never caches what it compiles: an install without bytecode compiles every
imported module again in every process. pip compiles at install; uv only when asked, so
`make setup` asks (`uv pip sync --compile-bytecode`).

Two virtual environments are made with the versions `make setup` installed from the lock
(from uv's cache, no network), alike but for `--compile-bytecode`, each with Quorum
installed from this checkout. Each round runs `quorum --version` and `quorum threads` (on an
empty data folder) in both, in turns (A B, then B A). Measured from outside: the wall time
and the CPU time (user and system, from the kernel's accounting of the ended process). Both
environments are deleted at the end.

Run from the repository root: `.venv/bin/python -m bench startup [--repeats 5] [--json]
[--out DIR]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.harness import Measurement, add_repeats
from bench.rows import interleaved, median

ROOT = Path(__file__).resolve().parent.parent
UV = Path(sys.executable).with_name("uv")
COMMANDS = {"--version": ["--version"], "threads": ["threads"]}


def make_venv(folder: Path, *, compiled: bool) -> Path:
    """A virtual environment with what `make setup` installed from the lock (but uv, which
    `make setup` installs with pip) and Quorum (editable); its Python."""
    env = {**os.environ, "VIRTUAL_ENV": str(folder)}
    subprocess.run(
        [str(UV), "venv", "--quiet", "--python", sys.executable, str(folder)], check=True
    )
    frozen = subprocess.run(
        [str(UV), "pip", "freeze", "--exclude-editable", "--python", sys.executable],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    requirements = folder / "requirements.txt"
    requirements.write_text(
        "".join(line + "\n" for line in frozen.splitlines() if not line.startswith("uv=="))
    )
    install = [str(UV), "pip", "install", "--quiet", "--offline", "--no-deps"]
    compile_ = ["--compile-bytecode"] if compiled else []
    subprocess.run([*install, *compile_, "-r", str(requirements)], env=env, check=True)
    subprocess.run([*install, "-e", str(ROOT)], env=env, check=True)
    return folder / "bin" / "python"


def started(python: Path, args: list[str], data: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one `quorum ARGS` in `python`'s environment."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "QUORUM_DATA_DIR": str(data)}
    began = time.perf_counter()
    process = subprocess.Popen(
        [str(python), "-m", "quorum.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - began
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"quorum {' '.join(args)} exited {process.returncode} in {python}")
    return wall, usage.ru_utime + usage.ru_stime


def measure(repeats: int) -> dict[str, Any]:
    """Interleaved rounds of every command in both environments."""
    with tempfile.TemporaryDirectory(prefix="quorum-startup-") as folder:
        root = Path(folder)
        pythons = {
            "compiled": make_venv(root / "compiled", compiled=True),
            "uncompiled": make_venv(root / "uncompiled", compiled=False),
        }
        results: dict[str, Any] = {}
        for name, args in COMMANDS.items():
            walls: dict[str, list[float]] = {side: [] for side in pythons}

            def side(python: Path, kept: list[float], args: list[str] = args) -> Any:
                async def run() -> float:
                    wall, cpu = started(python, args, root / "data")
                    kept.append(wall)
                    return cpu

                return run

            cpu = asyncio.run(
                interleaved({s: side(python, walls[s]) for s, python in pythons.items()}, repeats)
            )
            results[name] = {
                s: {"cpu_s": cpu[s], "wall_s": walls[s][1:], "median_cpu_s": median(cpu[s])}
                for s in pythons
            }
            results[name]["ratio_cpu"] = round(
                median(cpu["compiled"]) / median(cpu["uncompiled"]), 3
            )
    return results


def arguments(parser: argparse.ArgumentParser) -> None:
    """Rounds."""
    add_repeats(parser, 5)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both environments made, every command timed in them, both deleted."""
    return measure(args.repeats)


def table(results: dict[str, Any], _args: argparse.Namespace) -> Iterator[str]:
    """A line per command: the median CPU time compiled and not, and their ratio."""
    for name, sides in results.items():
        yield (
            f"quorum {name}: CPU median compiled {sides['compiled']['median_cpu_s']:.2f} s, "
            f"uncompiled {sides['uncompiled']['median_cpu_s']:.2f} s, "
            f"ratio {sides['ratio_cpu']:.3f}"
        )


MEASUREMENT = Measurement(
    "startup",
    "what a quorum command costs to start, the install compiled to bytecode and not",
    arguments,
    run,
    table=table,
)
