"""The bench harness: one entry point that runs, prints and keeps every measurement.

`python -m bench [NAME] [options]` runs one measurement, the suite when no NAME is given;
`python -m bench --list` names them all. A measurement is a module of `bench` exposing a
`MEASUREMENT` (its name, a line saying what it measures, the arguments it adds and the
function that measures and returns the result). Arguments are parsed, the result printed
(its table, or `--json`) and written (`--out DIR`: DIR/NAME.json) here, the same for all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import inspect
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.rows import Row, rows_table

BENCH = Path(__file__).resolve().parent
MEASUREMENTS = (
    "suite",
    "late_steps",
    "bench_tracing",
    "bench_tokens",
    "bench_ttft",
    "bench_sqlite_sync",
    "bench_crash",
    "conformance",
    "contention",
    "injection",
    "main_job",
    "server_memory",
    "server_peak",
    "startup",
)
"""The modules of `bench` that are measurements, in the order `--list` names them."""
EMBEDDED_MODELS = ("qwen2.5-coder-1.5b", "smollm2-135m")
"""The embedded models a measurement can run on; the first is Quorum's default."""


# --- The entry point ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """What `python -m bench NAME` needs of one measurement's module."""

    name: str
    about: str
    """One line: what it measures (its `--list` entry and the first line of its help)."""
    arguments: Callable[[argparse.ArgumentParser], None]
    """Adds its own options (and may `set_defaults`, say of `out`)."""
    run: Callable[[argparse.Namespace], Any]
    """Measures; returns the result (rows, a dict or a list). May be async."""
    table: Callable[[Any, argparse.Namespace], Iterable[Any]] | None = None
    """The result as lines and rich tables; None: the result is `Row`s, shown as a table."""
    ok: Callable[[Any], bool] | None = None
    """Whether the result is a pass (exit status 0); None: always."""
    files: Callable[[Any, Path], list[Path]] | None = None
    """Other files the result is written to under `--out`, beside the JSON."""


def measurement(name: str) -> Measurement:
    """The registration of measurement `name` (its module is imported only now)."""
    found: Measurement = importlib.import_module(f"bench.{name}").MEASUREMENT
    return found


def main(argv: list[str] | None = None) -> int:
    """Run the named measurement (the suite by default), or name them all (`--list`)."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] in (["--list"], ["list"]):
        for name in MEASUREMENTS:
            print(f"{name:<18} {measurement(name).about}")
        return 0
    name = "suite"
    if words and not words[0].startswith("-"):
        name = words.pop(0)
        if name not in MEASUREMENTS:
            print(f"python -m bench: no measurement {name!r} (see --list)", file=sys.stderr)
            return 2
    chosen = measurement(name)
    return run(chosen, parser(chosen).parse_args(words))


def parser(chosen: Measurement) -> argparse.ArgumentParser:
    """The options of `chosen`, and the two every measurement takes."""
    made = argparse.ArgumentParser(
        prog=f"python -m bench {'[suite]' if chosen.name == 'suite' else chosen.name}",
        description=chosen.about,
        epilog="`python -m bench --list` names every measurement.",
    )
    chosen.arguments(made)
    kept = made.get_default("out")  # a measurement may keep its result by default
    where = f"DIR/{chosen.name}.json"
    made.add_argument("--json", action="store_true", help="print the result as JSON, no table")
    made.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help=f"also write the result to {where}"
        if kept is None
        else f"write the result to {where} (default {Path(kept).relative_to(BENCH.parent)})",
    )
    return made


def run(chosen: Measurement, args: argparse.Namespace) -> int:
    """Measure; write the result under `--out`, print it; the exit status."""
    result = chosen.run(args)
    if inspect.iscoroutine(result):
        result = asyncio.run(result)
    written: list[Path] = []
    if args.out is not None:
        written = [write_json(result, args.out / f"{chosen.name}.json")]
        written += chosen.files(result, args.out) if chosen.files else []
    show(chosen, result, args)
    if written:
        print("wrote " + ", ".join(map(str, written)), file=sys.stderr)
    return 0 if chosen.ok is None or chosen.ok(result) else 1


def show(chosen: Measurement, result: Any, args: argparse.Namespace) -> None:
    """The result on stdout: as JSON, or as the measurement's lines and tables."""
    if args.json:
        print(as_json(result))
        return
    # Wide enough for the names when the output is a file or a pipe, not a terminal.
    console = Console(width=max(Console().width, 150))
    for item in (chosen.table or _rows)(result, args):
        if isinstance(item, str):
            print(item, flush=True)
        else:
            console.print(item)


def _rows(rows: list[Row], _args: argparse.Namespace) -> Iterable[Table]:
    yield rows_table(rows)


def as_json(result: Any) -> str:
    """`result` as indented JSON: rows as the report keeps them, dataclasses as dicts."""
    return json.dumps(result, indent=2, default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, Row):
        return value.to_json()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def write_json(result: Any, path: Path) -> Path:
    """`result` as JSON at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(as_json(result) + "\n")
    return path


# --- Options and facts several measurements share ----------------------------------------------


def add_repeats(parser: argparse.ArgumentParser, default: int) -> None:
    """`--repeats`: timed rounds."""
    parser.add_argument(
        "--repeats", type=int, default=default, help=f"timed rounds (default {default})"
    )


def add_model(parser: argparse.ArgumentParser, max_tokens: int | None = None) -> None:
    """`--model`, an embedded model; with `max_tokens` (the default cap), `--max-tokens` too."""
    parser.add_argument(
        "--model",
        default=EMBEDDED_MODELS[0],
        choices=EMBEDDED_MODELS,
        help=f"the embedded model (default {EMBEDDED_MODELS[0]})",
    )
    if max_tokens is not None:
        parser.add_argument(
            "--max-tokens", type=int, default=max_tokens, help=f"output cap (default {max_tokens})"
        )


def load_average() -> list[float]:
    """The load averages over 1, 5 and 15 minutes, rounded."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return [round(x, 2) for x in load]


def commit() -> str:
    """The checkout's commit, short."""
    return subprocess.run(
        ["git", "-C", str(BENCH), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


def machine() -> dict[str, Any]:
    """When and on what a result was measured: date, Python, platform, CPU, load, commit."""
    cpu = ""
    with open("/proc/cpuinfo") if Path("/proc/cpuinfo").exists() else open(os.devnull) as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if "model name" in line), "")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average": load_average(),
        "commit": commit(),
    }


def isolated_settings(data: Path) -> None:
    """Quorum in this process: data in `data`, no endpoint from the shell, no LangSmith tracing.

    The shell's own settings (its data folder, an endpoint) never leak into a measurement.
    """
    from quorum.settings import get_settings

    for name in ("QUORUM_BASE_URL", "OPENAI_BASE_URL", "QUORUM_API_KEY", "OPENAI_API_KEY"):
        os.environ.pop(name, None)
    os.environ["LANGSMITH_TRACING"] = "false"
    os.environ["QUORUM_DATA_DIR"] = str(data)
    get_settings.cache_clear()


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A new folder under bench/.tmp for the block, removed after it with all it holds.

    On disk, not tmpfs: a sync that costs nothing would flatter what commits to a database.
    """
    (BENCH / ".tmp").mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=BENCH / ".tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def embedded_data_dir(folder: Path) -> Path:
    """A bench's data folder under `folder`, reusing the default data folder's model file.

    Joining the default model's parts copies about 1 GB: the file already joined (and
    verified against its hash) in the default data folder is the same one.
    """
    from quorum.settings import default_data_dir

    data = folder / "data"
    data.mkdir(parents=True)
    models = default_data_dir() / "models"
    if any(models.glob("*.verified")):
        (data / "models").symlink_to(models, target_is_directory=True)
    return data


def end_group(process: Any, grace: float = 10) -> None:
    """End a process started in its own session, and its group: SIGTERM, then SIGKILL."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
