"""Rows measured in a process of their own: the embedded model's tokens per second, and tracing.

`bench_tokens` starts the embedded model's server and loads the model in-process too;
`bench_tracing` changes the process's environment (OTEL_*, LangSmith) and settings. Each runs
as `python -m bench <name> --json` in a child process, so neither touches the suite's own
process, and its JSON becomes the suite's rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from bench.rows import Row, Target


def _child(name: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench", name, "--json", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench {name} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def tokens(model: str, repeats: int, max_tokens: int) -> list[Row]:
    """Tokens per second through Quorum's model seam against llama-cpp-python in-process."""
    result = _child(
        "bench_tokens", "--model", model, "--repeats", str(repeats), "--max-tokens", str(max_tokens)
    )
    routes = result["routes"]
    return [
        Row(
            f"embedded model tokens/s, Quorum vs llama-cpp-python in-process ({model})",
            routes["quorum"]["median_tokens_per_s"],
            routes["inprocess"]["median_tokens_per_s"],
            "tok/s",
            Target(">=", result["target"]),
            "llama_cpp.Llama in-process",
            note=f"{max_tokens} tokens a call; over the same server by plain HTTP: "
            f"{result['ratios']['quorum/http']['of_medians']:.2f}x",
        )
    ]


def tracing(rounds: int) -> list[Row]:
    """A run with tracing off against the hooks cut out, and with tracing on against off."""
    result = _child("bench_tracing", "--on", "--rounds", str(rounds))
    ms = result["median_ms"]
    return [
        Row(
            f"tracing off vs the tracing hooks cut out ({result['pattern']} run)",
            ms["off"] / 1000,
            ms["bare"] / 1000,
            "s",
            Target("<=", 1.05),
            "no hooks",
            database="sqlite",
            note=f"{sum(result['hooks_per_run'].values())} hooks a run, "
            f"{result['hook_ns_when_off']:.0f} ns each when off: "
            f"{result['hooks_cost_share_of_run'] * 100:.4f} % of a run; the rest is noise",
        ),
        Row(
            f"tracing on (OpenTelemetry SDK, in-memory exporter) vs off ({result['pattern']} run)",
            ms["memory"] / 1000,
            ms["off"] / 1000,
            "s",
            baseline_name="tracing off",
            database="sqlite",
            note="every span made and exported; reported, no target",
        ),
    ]
