"""Secrets stay out of everything a run leaves behind, also when an endpoint echoes them.

Canary values are set as the model API key, the web-search key, the LangSmith key and the
OTLP collector's headers. `quorum run` (its own process, configured by environment only)
traces to an OTLP/HTTP receiver and a LangSmith stand-in on loopback, while the scripted
model server echoes the request's key in its error bodies: two 500s that are retried (the
run completes), and a 400 that fails the run. Every byte the receivers got, everything the
CLI printed, and every file under the data folder (the SQLite checkpoint with its WAL) must
hold no canary; the echoed errors must show up there redacted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quorum.testing.stub import schema_name
from tests.test_budgets import CountingStub, cli
from tests.test_tracing import clean_env
from tests.trace_receivers import LangSmithCapture, OtlpReceiver

CANARIES = {
    "QUORUM_API_KEY": "sk-canary-model-5e1d9b2a7c",
    "QUORUM_TAVILY_API_KEY": "tvly-canary-search-8a2f41",
    "LANGSMITH_API_KEY": "lsv2-canary-tracing-3b7c",
}
OTLP_TOKEN = "otlp-canary-token-9d4e2f"
ECHO = "Incorrect API key provided: {key}. You can find your API key at ..."


@pytest.mark.slow
def test_no_secret_in_spans_payloads_output_or_checkpoints(tmp_path: Path) -> None:
    printed: list[str] = []
    with CountingStub() as stub, OtlpReceiver() as otlp, LangSmithCapture() as langsmith:
        env = clean_env(tmp_path, stub) | CANARIES
        env |= {
            "QUORUM_RETRY_WAIT": "0.05",
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
            "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer {OTLP_TOKEN}",
            "LANGSMITH_TRACING": "true",
            "LANGSMITH_ENDPOINT": langsmith.url,
        }
        # Retried twice, then answered: the run completes with the echoes in its journal.
        stub.fail(500, times=2, message=ECHO)
        done = cli(
            "run", "orchestrator", "Compare A and B", "--thread", "ok1", env=env, cwd=tmp_path
        )
        printed += [done.stdout, done.stderr]
        assert done.returncode == 0, done.stderr
        # Refused outright: the run fails, the echo in its stored error and on the screen.
        stub.fail(400, message=ECHO, when=lambda body: schema_name(body) == "Ruling")
        failed = cli("run", "debate", "Tabs or spaces?", "--thread", "bad1", env=env, cwd=tmp_path)
        printed += [failed.stdout, failed.stderr]
        assert failed.returncode == 1, failed.stderr
        assert "Incorrect API key provided: [redacted]" in failed.stderr
        for thread in ("ok1", "bad1"):
            shown = cli("show", thread, "--json", env=env, cwd=tmp_path)
            printed += [shown.stdout, shown.stderr]
            assert shown.returncode == 0, shown.stderr
        assert "[redacted]" in json.loads(shown.stdout)["error"]

    # The server did echo the key: these are the bodies it sent.
    key = CANARIES["QUORUM_API_KEY"]
    assert {r.headers["authorization"] for r in stub.chat_requests()} == {f"Bearer {key}"}
    assert len([r for r in stub.chat_requests() if r.status in (400, 500)]) == 3

    files = {p: p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file()}
    assert any(p.name.endswith(".db") for p in files)
    sinks: dict[str, bytes] = {
        "OTLP spans": b"".join(otlp.bodies),
        "LangSmith payloads": b"".join(langsmith.bodies),
        "CLI output": "".join(printed).encode(),
        **{str(p.relative_to(tmp_path)): data for p, data in files.items()},
    }
    secrets = [*CANARIES.values(), OTLP_TOKEN]
    for where, data in sinks.items():
        for secret in secrets:
            assert data.count(secret.encode()) == 0, f"{secret} in {where}"
            assert data.count(secret.encode("utf-16-le")) == 0, f"{secret} in {where}"
    # The echoes reached each sink, redacted.
    for where in ("OTLP spans", "LangSmith payloads", "CLI output"):
        assert b"[redacted]" in sinks[where], where
    assert any(b"Incorrect API key provided: [redacted]" in data for data in files.values())
    assert otlp.spans() and langsmith.runs, "both tracers received the runs"
