"""Peak resident memory of the embedded model server over the main job, per configuration.

Runs the main job (`make run`: `quorum run orchestrator GOAL --set max_plan_steps=3 --set
max_tool_calls=1`) through the real CLI, `python -m quorum.cli run ...`, on the embedded
default model, once per configuration and repeat, interleaved (A, B, C, ... then ..., C, B,
A). Each run gets a fresh data folder under `bench/.tmp/` whose `models` folder links the
default data folder's (the joined model file is not joined again). Configurations, by
QUORUM_EMBEDDED_* variables:

- `defaults`: the settings as they are (an 8k context, 512-token batches, no prompt cache,
  every core);
- `cache-256m`: QUORUM_EMBEDDED_CACHE_BYTES=256 MiB;
- `cache-off`: QUORUM_EMBEDDED_CACHE_BYTES=0;
- `cache-1g`: QUORUM_EMBEDDED_CACHE_BYTES=1 GiB (the default until 2026-12-06);
- `batch128`: QUORUM_EMBEDDED_BATCH=128 (a quarter of the logits);
- `batch128-cache768m`: 128-token batches and a 768 MiB prompt cache;
- `ctx4k-cache-256m`: QUORUM_EMBEDDED_CONTEXT=4096 and a 256 MiB cache;
- `no-logits`: the defaults, but the server started by this bench (as `quorum model serve`
  would, recorded in the data folder, so the CLI uses it) with `--logits_all False`.
  llama-cpp-python's server keeps every evaluated token's logits by default (n_vocab float32
  a token, in an n_ctx-row array, copied again into each prompt-cache entry); Quorum asks
  for no logprobs. No QUORUM_EMBEDDED_* setting reaches this: it shows what a change to
  `quorum.embedded.model_options` would save. Its answer time counts from the server's start.

Measured from outside: the server process (the one running `llama_cpp.server`, found under
the CLI in /proc) is read every 0.5 s: VmHWM (its peak, as the kernel keeps it; the last
read before it ends is the peak) and VmRSS (the peak of the samples, to cross-check). The
CLI's own VmHWM likewise, and the tree's maximum RSS as GNU time reports it (`wait4`'s
ru_maxrss: the largest single process, the server included), the wall time of the run (the
answer time), its exit code and the answer's length on stdout. The KV cache's bytes per token
come from the model file's GGUF header. Every process started is gone at the end, also on
failure.

Run from the repository root: `.venv/bin/python -m bench server_peak [--repeats 1]
[--configs defaults,cache-off,...] [--json] [--out DIR]`. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import (
    BENCH,
    Measurement,
    add_repeats,
    commit,
    embedded_data_dir,
    end_group,
    load_average,
)
from quorum import embedded, model_files
from quorum.settings import Settings, default_data_dir

ROOT = BENCH.parent
GOAL = "Compare SQLite and PostgreSQL as the checkpoint store for a small team's agent service"
RUN_SETTINGS = ("max_plan_steps=3", "max_tool_calls=1")
"""The Makefile's GOAL and RUN_SETTINGS: what `make run` runs."""
TARGET_BYTES = 3 * 10**9
"""The most the server may hold resident over the main job (issue 25: 3 GB)."""
RUN_TIMEOUT = 3600.0
INTERVAL = 0.5
MIB = 1 << 20

CONFIGS: dict[str, dict[str, str]] = {
    "defaults": {},
    "cache-256m": {"QUORUM_EMBEDDED_CACHE_BYTES": str(256 * MIB)},
    "cache-off": {"QUORUM_EMBEDDED_CACHE_BYTES": "0"},
    "cache-1g": {"QUORUM_EMBEDDED_CACHE_BYTES": str(1024 * MIB)},
    "batch128": {"QUORUM_EMBEDDED_BATCH": "128"},
    "batch128-cache768m": {
        "QUORUM_EMBEDDED_BATCH": "128",
        "QUORUM_EMBEDDED_CACHE_BYTES": str(768 * MIB),
    },
    "ctx4k-cache-256m": {
        "QUORUM_EMBEDDED_CONTEXT": "4096",
        "QUORUM_EMBEDDED_CACHE_BYTES": str(256 * MIB),
    },
    "no-logits": {},
}
OWN_SERVER = {"no-logits": ("--logits_all", "False")}
"""Configurations whose server this bench starts, with the extra server options."""


# --- /proc -------------------------------------------------------------------------------------


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of `pid` in bytes ({} once it is gone)."""
    found: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0]) * 1024
    except (OSError, ValueError):
        return {}
    return found


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def find_server(ancestor: int) -> int | None:
    """The process running llama_cpp.server whose ancestor is `ancestor`, if any."""
    for pid in _pids():
        if "llama_cpp.server" not in _cmdline(pid):
            continue
        up = pid
        for _ in range(64):
            up = _parent(up)
            if up == ancestor:
                return pid
            if up <= 1:
                break
    return None


def _mentioning(text: str) -> list[int]:
    """Processes (not this one) whose command line mentions `text`."""
    return [p for p in _pids() if p != os.getpid() and text in _cmdline(p)]


def _end(pid: int, marker: str) -> None:
    """SIGTERM, then SIGKILL, `pid` if it still runs a command mentioning `marker`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if marker not in _cmdline(pid):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
        for _ in range(50):
            if marker not in _cmdline(pid):
                return
            time.sleep(0.1)


@dataclass
class Sampler:
    """Reads the server's and the CLI's memory every INTERVAL seconds, in a thread."""

    cli: int
    server: int | None = None
    server_hwm: int = 0
    server_rss_peak: int = 0
    cli_hwm: int = 0
    tree_rss_peak: int = 0
    """Peak of CLI + server RSS summed at one sample."""
    samples: list[tuple[float, int, int]] = field(default_factory=list)
    """(seconds, server VmRSS, CLI VmRSS) every sample."""
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        started = time.monotonic()
        while not self.stop.is_set():
            if self.server is None:
                self.server = find_server(self.cli)
            server = _status(self.server) if self.server is not None else {}
            cli = _status(self.cli)
            self.server_hwm = max(self.server_hwm, server.get("VmHWM", 0))
            self.server_rss_peak = max(self.server_rss_peak, server.get("VmRSS", 0))
            self.cli_hwm = max(self.cli_hwm, cli.get("VmHWM", 0))
            rss = (server.get("VmRSS", 0), cli.get("VmRSS", 0))
            self.tree_rss_peak = max(self.tree_rss_peak, sum(rss))
            self.samples.append((round(time.monotonic() - started, 1), *rss))
            self.stop.wait(INTERVAL)


# --- One run -----------------------------------------------------------------------------------


@dataclass
class Run:
    """One main job under one configuration."""

    config: str
    exit_code: int
    seconds: float
    server_hwm: int
    server_rss_peak: int
    cli_hwm: int
    tree_rss_peak: int
    tree_maxrss: int
    """wait4's ru_maxrss of the CLI: its largest process, the server included (GNU time's)."""
    answer_chars: int
    server_found: bool
    load: list[float]
    answer_start: str = ""
    stderr_tail: str = ""
    samples: list[tuple[float, int, int]] = field(default_factory=list)


def _environment(data: Path, overrides: dict[str, str]) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("QUORUM_", "OPENAI_", "OTEL_", "LANGSMITH_", "LANGCHAIN_"))
    }
    env.update(
        QUORUM_DATA_DIR=str(data),
        LANGSMITH_TRACING="false",
        OTEL_SDK_DISABLED="true",
        PYTHONPATH=str(ROOT),
    )
    return env | overrides


_SERVE = (
    "import runpy, sys\n"
    "from quorum.llama_server import count_cache_entries_whole, count_streamed_usage\n"
    "count_streamed_usage()\n"
    "count_cache_entries_whole()\n"
    "sys.argv = ['llama_cpp.server', *sys.argv[1:]]\n"
    "runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)\n"
)


def _start_own_server(data: Path, env: dict[str, str], extra: tuple[str, ...]) -> Any:
    """Start the server as `quorum model serve` would, plus `extra`; record it for the CLI."""
    settings = Settings(data_dir=data)
    port = embedded._free_port()
    # As quorum.embedded runs it (less the pipes it watches): with the patch that reports the
    # token usage of streamed replies.
    command = [sys.executable, "-c", _SERVE, "--host", embedded.HOST]
    command += ["--port", str(port), "--interrupt_requests", "False"]
    for option, value in embedded.model_options(settings).items():
        command += [f"--{option}", str(value)]
    command += list(extra)
    log = (data / "embedded-model.log").open("wb")
    process = subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + 300
    while not embedded.answers(port, embedded.model_alias(settings), timeout=1.0):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the bench's server did not start: see {data}/embedded-model.log")
        time.sleep(0.2)
    (data / "embedded-model.json").write_text(json.dumps({"port": port, "pid": process.pid}))
    return process


def run_once(config: str, folder: Path) -> Run:
    """Run the main job once under `config`; every process it started is ended."""
    data = embedded_data_dir(folder)
    env = _environment(data, CONFIGS[config])
    started = time.monotonic()
    own = None
    sampler: Sampler | None = None
    thread: threading.Thread | None = None
    process: subprocess.Popen[bytes] | None = None
    try:
        if config in OWN_SERVER:
            own = _start_own_server(data, env, OWN_SERVER[config])
        process = _start_main_job(env, folder)
        sampler = Sampler(process.pid, server=own.pid if own is not None else None)
        thread = threading.Thread(target=sampler.run, daemon=True)
        thread.start()
        usage = _wait(process)
        seconds = time.monotonic() - started
        if own is not None:
            # The bench's own server outlives the CLI: its last reads are taken now.
            time.sleep(INTERVAL * 2)
    finally:
        _end_run(folder, process, own, sampler, thread)
    assert sampler is not None and process is not None
    return _measured(config, folder, process, seconds, usage, sampler)


def _start_main_job(env: dict[str, str], folder: Path) -> subprocess.Popen[bytes]:
    """Start `make run`'s command through the CLI in a session of its own, output to files."""
    command = [sys.executable, "-m", "quorum.cli", "run", "orchestrator", GOAL]
    for setting in RUN_SETTINGS:
        command += ["--set", setting]
    with (folder / "stdout.txt").open("wb") as out, (folder / "stderr.txt").open("wb") as err:
        return subprocess.Popen(
            command,
            env=env,
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )


def _wait(process: subprocess.Popen[bytes]) -> resource.struct_rusage:
    """Wait for the main job to end (RUN_TIMEOUT at most), set its returncode; its usage.

    `os.wait4`, not `process.wait()`: its ru_maxrss is the tree's maximum RSS as GNU time
    reports it.
    """
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return usage
        if time.monotonic() > deadline:
            raise TimeoutError(f"the main job took over {RUN_TIMEOUT:.0f} s")
        time.sleep(0.1)


def _end_run(
    folder: Path,
    process: subprocess.Popen[bytes] | None,
    own: subprocess.Popen[bytes] | None,
    sampler: Sampler | None,
    thread: threading.Thread | None,
) -> None:
    """Stop the sampler, then end the CLI, the bench's own server and whatever is left.

    Any of them may be None: a run that failed part-way ends what it had started.
    """
    if sampler is not None and thread is not None:
        sampler.stop.set()
        thread.join(10)
    if process is not None and process.returncode is None:
        end_group(process, 15)
    if own is not None:
        own.terminate()
        try:
            own.wait(15)
        except subprocess.TimeoutExpired:
            own.kill()
            own.wait()
    # The server follows the CLI through its pipe; anything still naming this run's
    # folder (the server's --model path is under it) is ended here.
    for pid in _mentioning(str(folder)):
        _end(pid, str(folder))


def _measured(
    config: str,
    folder: Path,
    process: subprocess.Popen[bytes],
    seconds: float,
    usage: resource.struct_rusage,
    sampler: Sampler,
) -> Run:
    """The run's record: the sampler's peaks, wait4's maximum RSS, and the answer on stdout."""
    answer = (folder / "stdout.txt").read_text(errors="replace").strip()
    stderr = (folder / "stderr.txt").read_text(errors="replace").strip()
    return Run(
        config=config,
        exit_code=process.returncode,
        seconds=round(seconds, 1),
        server_hwm=sampler.server_hwm,
        server_rss_peak=sampler.server_rss_peak,
        cli_hwm=sampler.cli_hwm,
        tree_rss_peak=sampler.tree_rss_peak,
        tree_maxrss=usage.ru_maxrss * 1024,
        answer_chars=len(answer),
        server_found=sampler.server is not None,
        load=load_average(),
        answer_start=answer.splitlines()[0][:120] if answer else "",
        stderr_tail=stderr[-600:] if process.returncode else "",
        samples=sampler.samples,
    )


# --- The model's memory cost per token ---------------------------------------------------------


def model_costs(path: Path) -> dict[str, Any]:
    """KV cache bytes per token (f16 keys and values, llama.cpp's default) and logits bytes."""
    meta: dict[str, Any] = model_files.gguf_header(path)
    arch = str(meta.get("general.architecture", "llama"))
    layers = int(meta[f"{arch}.block_count"])
    heads = int(meta[f"{arch}.attention.head_count"])
    kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", heads))
    width = int(meta[f"{arch}.embedding_length"])
    key_length = int(meta.get(f"{arch}.attention.key_length", width // heads))
    value_length = int(meta.get(f"{arch}.attention.value_length", width // heads))
    vocab = int(meta.get("tokenizer.ggml.tokens", 0))
    kv = layers * kv_heads * (key_length + value_length) * 2
    return {
        "file": str(path.resolve()),
        "file_bytes": path.resolve().stat().st_size,
        "architecture": arch,
        "layers": layers,
        "heads": heads,
        "kv_heads": kv_heads,
        "head_dim": key_length,
        "vocab": vocab,
        "trained_context": int(meta.get(f"{arch}.context_length", 0)),
        "kv_bytes_per_token": kv,
        "kv_bytes_8k": kv * 8192,
        "kv_bytes_4k": kv * 4096,
        "logits_bytes_per_token": vocab * 4,
        "logits_bytes_8k": vocab * 4 * 8192,
    }


# --- The bench ---------------------------------------------------------------------------------


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(configs: list[str], repeats: int) -> dict[str, Any]:
    """Every configuration `repeats` times, interleaved; the runs and the model's costs."""
    (BENCH / ".tmp").mkdir(exist_ok=True)
    costs = model_costs(embedded.model_file(Settings(data_dir=default_data_dir())))
    machine = {
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "mem_available_before": _mem_available(),
        "load_before": load_average(),
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    runs: list[Run] = []
    for round_ in range(repeats):
        for config in configs if round_ % 2 == 0 else list(reversed(configs)):
            folder = Path(tempfile.mkdtemp(prefix=f"peak-{config}-", dir=BENCH / ".tmp"))
            try:
                run = run_once(config, folder)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            runs.append(run)
            print(
                f"[{time.strftime('%H:%M:%S')}] {config}: server peak "
                f"{run.server_hwm / 1e9:.2f} GB, {run.seconds:.0f} s, exit {run.exit_code}, "
                f"load {run.load}",
                file=sys.stderr,
                flush=True,
            )
            # The whole run too, on one line: a long bench stopped early keeps what it measured.
            brief = {k: v for k, v in asdict(run).items() if k != "samples"}
            print(json.dumps(brief), file=sys.stderr, flush=True)
    machine["load_after"] = load_average()
    leftovers = _mentioning(str(BENCH / ".tmp" / "peak-"))
    return {
        "goal": GOAL,
        "run_settings": list(RUN_SETTINGS),
        "repeats": repeats,
        "target_server_peak_bytes": TARGET_BYTES,
        "model": costs,
        "machine": machine,
        "leftover_processes": leftovers,
        "runs": [asdict(run) for run in runs],
    }


def table(result: dict[str, Any], _args: argparse.Namespace) -> Iterator[str]:
    """The runs as a table, then the model's costs per token."""
    gb = 1e9
    m = result["machine"]
    yield (
        f"main job: orchestrator, {' '.join(result['run_settings'])}; {result['repeats']} "
        f"repeat(s); {m['cores']} cores, MemAvailable {m['mem_available_before'] / gb:.1f} GB, "
        f"load {m['load_before']} -> {m['load_after']}; {m['date']}, {m['commit']}"
    )
    yield (
        f"{'config':<18}{'srv VmHWM':>10}{'srv RSS pk':>11}{'CLI HWM':>9}{'tree max':>9}"
        f"{'time s':>8}{'exit':>5}{'answer':>8}"
    )
    for run in result["runs"]:
        peaks = f"{run['server_hwm'] / gb:>9.2f}G{run['server_rss_peak'] / gb:>10.2f}G"
        yield (
            f"{run['config']:<18}{peaks}"
            f"{run['cli_hwm'] / gb:>8.2f}G{run['tree_maxrss'] / gb:>8.2f}G{run['seconds']:>8.0f}"
            f"{run['exit_code']:>5}{run['answer_chars']:>8}"
        )
    c = result["model"]
    yield (
        f"model: {c['layers']} layers, {c['kv_heads']} KV heads x {c['head_dim']}, vocab "
        f"{c['vocab']}, file {c['file_bytes'] / gb:.2f} GB"
    )
    yield (
        f"  KV cache (f16): {c['kv_bytes_per_token'] / 1024:.0f} KiB a token, "
        f"{c['kv_bytes_8k'] / MIB:.0f} MiB at 8k, {c['kv_bytes_4k'] / MIB:.0f} MiB at 4k"
    )
    yield (
        f"  logits kept per token (server's logits_all): {c['logits_bytes_per_token'] / 1024:.0f} "
        f"KiB, {c['logits_bytes_8k'] / gb:.2f} GB at 8k"
    )
    target = result["target_server_peak_bytes"] / gb
    yield f"target: server peak <= {target:.0f} GB; leftovers: {result['leftover_processes']}"


def _configs(text: str) -> list[str]:
    configs = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown configurations: {unknown}")
    return configs


def arguments(parser: argparse.ArgumentParser) -> None:
    """Repeats, and which configurations."""
    add_repeats(parser, 1)
    parser.add_argument(
        "--configs",
        type=_configs,
        default=list(CONFIGS),
        help=f"comma-separated, of {', '.join(CONFIGS)} (default: all)",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every configuration; a signal ends the runs in flight, and what they started, first."""

    # SIGTERM (and SIGINT, ignored in a background job) end the bench through its `finally`
    # blocks, which end the CLI and the server.
    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return measure(args.configs, args.repeats)


MEASUREMENT = Measurement(
    "server_peak",
    "the embedded server's peak memory over the main job, per configuration",
    arguments,
    run,
    table=table,
)
