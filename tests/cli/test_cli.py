"""The `quorum` command line, in process with the scripted model."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from quorum.cli import app
from quorum.testing import Script

runner = CliRunner()


def quorum(*args: str):
    return runner.invoke(app, list(args))


def test_run_streams_progress_and_prints_answer_and_thread(script: Script) -> None:
    result = quorum("run", "pipeline", "Water", "--thread", "t1")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# Water")
    for stage in ("research", "summarize", "fact_check", "format_report"):
        assert f"▶ {stage}" in result.stderr and f"✓ {stage}" in result.stderr
    assert "steps done 4" in result.stderr and "tokens so far 105" in result.stderr
    assert "thread t1  status completed  tokens 105 (70 in, 35 out) over 7 model calls" in (
        result.stderr
    )


def test_run_with_context_settings(script: Script) -> None:
    result = quorum("run", "debate", "Q?", "--set", "max_rounds=2", "--model", "m1")

    assert result.exit_code == 0, result.output
    assert script.count("debater_a") == 5  # answer, 2 x (critique, revise)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "poem", "x"], "unknown pattern 'poem' (choose one of: orchestrator, pipeline,"),
        (["graph", "poem"], "unknown pattern 'poem'"),
        (["run", "react", "   "], "error: the input is empty"),
        (["run", "react", "x", "--set", "max_steps=0"], "max_steps: Input should be greater"),
        (["run", "react", "x", "--set", "nope=1"], "unknown context setting nope"),
        (["run", "react", "x", "--set", "max_steps"], "is not KEY=VALUE"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(script: Script, args, message) -> None:
    result = quorum(*args)

    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert script.calls == []


@pytest.mark.parametrize("command", ["resume", "show"])
def test_unknown_thread_is_a_clear_error(script: Script, command: str) -> None:
    assert quorum("run", "react", "6*7?").exit_code == 0
    result = quorum(command, "no-such-thread")

    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: no thread 'no-such-thread' in the checkpoint store "
        "(list threads with `quorum threads`)"
    )


@pytest.mark.parametrize("command", ["resume", "show"])
def test_unknown_thread_without_a_database_says_so(db: str, command: str) -> None:
    result = quorum(command, "no-such-thread")

    assert result.exit_code == 1
    assert result.stderr.strip().startswith(
        f"error: no thread 'no-such-thread': there is no checkpoint database at {db!r} yet "
        "(no run has used it:"
    )


def test_run_refuses_an_existing_thread_id(script: Script) -> None:
    assert quorum("run", "react", "6*7?", "--thread", "dup").exit_code == 0
    again = quorum("run", "react", "6*7?", "--thread", "dup")

    assert again.exit_code == 2
    assert "thread 'dup' already exists" in again.stderr


def test_missing_model_file_fails_before_saving_anything(monkeypatch) -> None:
    monkeypatch.setenv("QUORUM_EMBEDDED_MODEL_PATH", "missing/model.gguf")

    result = quorum("run", "react", "hello")

    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: the embedded model file 'missing/model.gguf' does not exist (set "
        "QUORUM_EMBEDDED_MODEL_PATH to a GGUF file, or QUORUM_BASE_URL to use a model server "
        "instead)"
    )
    assert quorum("threads").stdout.strip() == "no threads yet"


def test_failed_agent_is_named_then_resume_finishes_without_repeating_work(
    script: Script,
) -> None:
    failures = iter([RuntimeError("analyst backend exploded")])

    def flaky(agent, messages):
        error = next(failures, None)
        if error:
            raise error
        return "analysed"

    script.on("analyst", flaky)

    failed = quorum("run", "orchestrator", "Goal", "--thread", "crash")

    assert failed.exit_code == 1
    assert "orchestrator run crash stopped: agent 'worker' failed" in failed.stderr
    assert "analyst backend exploded" in failed.stderr
    assert "quorum resume crash" in failed.stderr
    listed = json.loads(quorum("threads", "--json").stdout)
    assert [(t["thread_id"], t["status"]) for t in listed] == [("crash", "failed")]

    resumed = quorum("resume", "crash")

    assert resumed.exit_code == 0, resumed.output
    assert "# Final answer" in resumed.stdout
    # Nothing that had finished before the failure was asked again.
    assert {a: script.count(a) for a in ("planner", "researcher", "analyst", "writer")} == {
        "planner": 2,  # it thinks, then writes the plan
        "researcher": 1,
        "analyst": 2,
        "writer": 1,
    }
    assert json.loads(quorum("threads", "--json").stdout)[0]["status"] == "completed"


def test_resume_of_completed_thread_prints_it_again(script: Script) -> None:
    quorum("run", "react", "6*7?", "--thread", "done")
    calls = len(script.calls)

    again = quorum("resume", "done")

    assert again.exit_code == 0
    assert again.stdout.strip() == "The answer is 42."
    assert len(script.calls) == calls


def test_threads_lists_pattern_status_and_update(script: Script) -> None:
    quorum("run", "react", "6*7?", "--thread", "a")
    quorum("run", "pipeline", "Water", "--thread", "b")

    listed = json.loads(quorum("threads", "--json").stdout)

    assert [(t["thread_id"], t["pattern"], t["status"]) for t in listed] == [
        ("b", "pipeline", "completed"),
        ("a", "react", "completed"),
    ]
    assert all(t["updated_at"] for t in listed)
    table = quorum("threads").stdout
    assert "pipeline" in table and "completed" in table


def test_show_prints_output_history_and_usage(script: Script) -> None:
    quorum("run", "react", "6*7?", "--thread", "s")

    shown = quorum("show", "s")

    assert shown.exit_code == 0
    assert "react thread s: completed" in shown.stdout
    assert "The answer is 42." in shown.stdout
    assert "history" in shown.stdout and "tool" in shown.stdout
    data = json.loads(quorum("show", "s", "--json").stdout)
    assert [h["agents"] for h in data["history"]] == [["agent"], ["tool"], ["agent"]]
    assert data["usage"]["agent"]["calls"] == 2


@pytest.mark.parametrize("pattern", ["orchestrator", "pipeline", "debate", "react"])
def test_graph_prints_mermaid(pattern: str) -> None:
    result = quorum("graph", pattern)

    assert result.exit_code == 0
    assert result.stdout.lstrip().startswith("---") and "graph TD;" in result.stdout


def test_every_command_has_help() -> None:
    for command in ("run", "resume", "threads", "show", "graph"):
        result = quorum(command, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output


def test_progress_names_each_parallel_worker_by_its_step(script: Script) -> None:
    result = quorum("run", "orchestrator", "Goal")

    assert result.exit_code == 0, result.output
    for label in ("researcher (s1)", "analyst (s2)", "writer (s3)"):
        assert f"▶ {label}" in result.stderr and f"✓ {label}" in result.stderr


def test_answer_is_printed_exactly_not_rewrapped(script: Script) -> None:
    long_line = "word " * 60 + "[not markup]"
    script.on("synthesizer", lambda a, m: long_line)

    result = quorum("run", "orchestrator", "Goal")

    assert result.stdout == long_line + "\n"


def test_resume_dry_run_says_what_would_run_and_runs_nothing(script: Script) -> None:
    assert quorum("run", "pipeline", "Water", "--thread", "d1").exit_code == 0
    calls = len(script.calls)

    shown = quorum("resume", "d1", "--dry-run")
    as_json = quorum("resume", "d1", "--dry-run", "--json")

    assert shown.exit_code == as_json.exit_code == 0, shown.output
    assert "completed → completed" in shown.stdout and "lease: free" in shown.stdout
    assert json.loads(as_json.stdout)["verdict"] == "completed"
    assert len(script.calls) == calls
