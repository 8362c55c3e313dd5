"""The bench harness: the suite's quick mode runs end to end and writes its report (no timings
checked), and `python -m bench --list` names every measurement registered in bench/."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from quorum.testing.langgraph_dev import REPO


@pytest.mark.slow
def test_quick_suite_writes_table_json_and_chart(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert "Quorum benchmark suite" in done.stdout
    report = json.loads((tmp_path / "suite.json").read_text())
    assert report["quick"] is True
    rows = report["rows"]
    names = " | ".join(row["name"] for row in rows)
    for what in (
        "agent step, no checkpointer (react)",
        "run, no checkpointer (orchestrator, 4 workers)",
        "durable step vs raw",
        "16 parallel workers",
        "concurrent durable runs vs no checkpointer (debate)",
        "concurrent quorum.run() vs no checkpointer (pipeline)",
        "checkpoint write time",
        "bytes stored",
        "vs 10-20, 30-round ReAct (quorum.run(), clock)",
        "vs 10-20, 30-round ReAct (CLI, clock)",
        "calls repeated by a resume",
        "peak memory per run in flight",
        "first-event latency",
        "durable step vs raw with LangGraph's own saver (react)",
        "concurrent durable runs vs raw with LangGraph's own saver (orchestrator)",
        "tracing off vs the tracing hooks cut out",
        "tracing on (OpenTelemetry SDK, in-memory exporter) vs off",
        "embedded model tokens/s, Quorum vs llama-cpp-python in-process (smollm2-135m)",
    ):
        assert what in names
    for row in rows:
        assert {"name", "quorum", "baseline", "ratio", "target", "met"} <= row.keys()
        assert row["quorum"] >= 0
        assert (row["met"] is None) == (row["target"] is None)
    # Correctness rows do not depend on timing: a resume repeats no finished call.
    assert all(row["quorum"] == 0 for row in rows if "calls repeated" in row["name"])
    assert (tmp_path / "suite.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_the_harness_names_every_measurement() -> None:
    """Each module of bench/ that registers a measurement is one `python -m bench NAME` runs."""
    registered = {
        match.group(1)
        for path in (REPO / "bench").glob("*.py")
        if (match := re.search(r'MEASUREMENT = Measurement\(\s*"(\w+)"', path.read_text()))
    }
    listed = subprocess.run(
        [sys.executable, "-m", "bench", "--list"], cwd=REPO, capture_output=True, text=True
    )
    unknown = subprocess.run(
        [sys.executable, "-m", "bench", "no_such_bench"], cwd=REPO, capture_output=True, text=True
    )

    assert listed.returncode == 0, listed.stderr[-3000:]
    named = {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}
    assert {"suite", "conformance", "server_peak"} <= registered
    assert named == registered
    assert unknown.returncode == 2
    assert "no measurement 'no_such_bench'" in unknown.stderr
