"""Replay and fork: `quorum show --history` lists a thread's checkpoints, and `quorum resume
--from CHECKPOINT` (`quorum.resume(..., checkpoint_id=...)`) runs on from one as a new branch.

A fork asks the model again from its checkpoint on (counted at the scripted OpenAI server),
never for the steps before it, and a fork that fails is resumed without asking again what it
had already asked. A thread a Studio run (`langgraph dev`) left failed is fixed from the CLI.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langgraph_sdk import get_client
from typer.testing import CliRunner

import quorum
from quorum.cli import app
from quorum.testing import Script
from quorum.testing.langgraph_dev import RUN_TIMEOUT, langgraph_dev
from quorum.testing.stub import STUB_MODEL, OpenAIStub, isolated_environ, schema_name, valid_plan


def quorum_cli(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIStub]:
    with OpenAIStub() as running:
        monkeypatch.setenv("QUORUM_BASE_URL", running.base_url)
        monkeypatch.setenv("QUORUM_MODEL", STUB_MODEL)
        monkeypatch.setenv("QUORUM_API_KEY", "test")
        yield running


def asked(stub: OpenAIStub) -> Counter[str | None]:
    """Chat requests the stub received, by the structured output they asked for."""
    return Counter(schema_name(body) for body in stub.chat_bodies())


def checkpoints(thread: str) -> list[dict]:
    shown = quorum_cli("show", thread, "--json")
    assert shown.exit_code == 0, shown.output
    return json.loads(shown.stdout)["checkpoints"]


def top_level_rows(db: str, thread: str) -> int:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        query = "SELECT COUNT(*) FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ''"
        return int(conn.execute(query, (thread,)).fetchone()[0])


def test_history_lists_every_checkpoint_with_its_id_step_next_and_time(stub: OpenAIStub) -> None:
    assert quorum_cli("run", "pipeline", "Water", "--thread", "h").exit_code == 0

    listed = checkpoints("h")
    table = quorum_cli("show", "h", "--history")

    assert [(c["step"], c["agents"], c["source"]) for c in listed] == [
        (0, [], "input"),
        (1, ["research"], "loop"),
        (2, ["summarize"], "loop"),
        (3, ["fact_check"], "loop"),
        (4, ["format_report"], "loop"),
        (5, [], "loop"),
    ]
    assert table.exit_code == 0
    for checkpoint in listed:
        row = next(
            line for line in table.stdout.splitlines() if checkpoint["checkpoint_id"] in line
        )
        assert checkpoint["created_at"] in row
        assert (", ".join(checkpoint["agents"]) or "(") in row
    assert "(the input)" in table.stdout and "(end)" in table.stdout
    assert "quorum resume h --from CHECKPOINT" in table.stderr


def test_fork_asks_again_from_its_checkpoint_and_never_before(stub: OpenAIStub, db: str) -> None:
    assert quorum_cli("run", "pipeline", "Water", "--thread", "f").exit_code == 0
    first_run = asked(stub)
    fact_check = next(c for c in checkpoints("f") if c["agents"] == ["fact_check"])

    forked = quorum_cli("resume", "f", "--from", fact_check["checkpoint_id"])

    assert forked.exit_code == 0, forked.output
    assert forked.stdout.startswith("Stub answer to: Topic: Water")
    fork_asked = asked(stub) - first_run
    # The fact-checker's tool turn, its answer and its verdict, then the formatter (prose):
    # never the research or the summary before the checkpoint.
    assert fork_asked == Counter({None: 3, "FactCheck": 1}), fork_asked
    assert {"ResearchNotes", "Claims"} <= set(first_run)
    # The thread's history is now the fork's branch: it starts at the fork's checkpoint.
    branch = checkpoints("f")
    assert [c["source"] for c in branch] == [
        "input",
        "loop",
        "loop",
        "loop",
        "fork",
        "loop",
        "loop",
    ]
    assert branch[3]["checkpoint_id"] == fact_check["checkpoint_id"]
    # The first branch stays in the store: 6 checkpoints, and 3 more for the fork.
    assert top_level_rows(db, "f") == 9

    again = quorum_cli("resume", "f", "--from", fact_check["checkpoint_id"][:30])

    assert again.exit_code == 0, again.output
    assert asked(stub) - first_run == Counter({None: 6, "FactCheck": 2})
    assert quorum_cli("threads", "--json").stdout.count('"status": "completed"') == 1


async def test_a_failed_fork_resumes_without_asking_again(script: Script) -> None:
    await quorum.run("pipeline", "Water", thread_id="ff")
    summarize = next(
        c for c in (await quorum.get_thread("ff")).checkpoints if c.agents == ["summarize"]
    )
    failures = iter([RuntimeError("format backend down")])

    def flaky(agent, messages):
        if (error := next(failures, None)) is not None:
            raise error
        return "# Water\nForked."

    script.on("format_report", flaky)
    before = Counter(call.agent for call in script.calls)

    with pytest.raises(quorum.RunFailed, match="format backend down"):
        await quorum.resume("ff", checkpoint_id=summarize.checkpoint_id)
    failed = await quorum.get_thread("ff")
    resumed = await quorum.resume("ff")

    assert failed.status == "failed"
    assert resumed.status == "completed" and resumed.output == "# Water\nForked."
    # The fork asked the summarizer (its summary and claims) and the fact-checker (its answer
    # and verdict) once each, as the first run did; resuming the failed fork asked only the
    # failed step again.
    assert before == Counter({"research": 2, "summarize": 2, "fact_check": 2, "format_report": 1})
    assert Counter(call.agent for call in script.calls) - before == Counter(
        {"summarize": 2, "fact_check": 2, "format_report": 2}
    )


async def test_a_fork_runs_with_changed_settings(script: Script) -> None:
    script.on("fact_check", lambda a, m: {"verdict": "unsupported", "unsupported_claims": ["x"]})
    first = await quorum.run(
        "pipeline", "Water", thread_id="s", context=quorum.QuorumContext(max_revisions=0)
    )
    research = next(
        c for c in (await quorum.get_thread("s")).checkpoints if c.agents == ["research"]
    )
    before = script.count("summarize")

    forked = await quorum.resume(
        "s", checkpoint_id=research.checkpoint_id, settings={"max_revisions": 1}
    )

    assert first.status == forked.status == "completed"
    # the fork allows one revision: two summaries, each written and its claims listed
    assert script.count("summarize") - before == 4


async def test_a_fork_asks_again_before_an_irreversible_call(
    script: Script, tmp_path: Path
) -> None:
    def saving(agent, messages):
        if any(isinstance(m, ToolMessage) for m in messages):
            return AIMessage("saved")
        args = {"path": "note.md", "content": "a note", "overwrite": True}
        return AIMessage("", tool_calls=[{"name": "write_file", "args": args, "id": "w1"}])

    script.on("agent", saving)
    waiting = await quorum.run("react", "Save a note", thread_id="w")
    done = await quorum.resume("w", approve=True)
    tool = next(c for c in (await quorum.get_thread("w")).checkpoints if c.agents == ["tool"])

    forked = await quorum.resume("w", checkpoint_id=tool.checkpoint_id)

    assert (waiting.status, done.status) == ("waiting_approval", "completed")
    # The approval given on the first branch is not carried over: the fork's call is new.
    assert forked.status == "waiting_approval"
    assert [w["tool"] for w in forked.waiting] == ["write_file"]
    assert (await quorum.resume("w", approve=False)).status == "completed"
    assert (tmp_path / "data" / "workspace" / "note.md").read_text() == "a note"


@pytest.mark.parametrize(
    ("checkpoint", "message"),
    [
        ("nope", "error: 'nope' is no checkpoint of thread 'e'"),
        ("1", "error: '1' matches several checkpoints of thread 'e'"),
        ("END", "is where thread 'e' ended: nothing runs from it"),
    ],
)
def test_a_bad_checkpoint_is_bad_input(script: Script, checkpoint: str, message: str) -> None:
    assert quorum_cli("run", "react", "6*7?", "--thread", "e").exit_code == 0
    if checkpoint == "END":
        checkpoint = checkpoints("e")[-1]["checkpoint_id"]
    calls = len(script.calls)

    result = quorum_cli("resume", "e", "--from", checkpoint)

    assert result.exit_code == 2
    assert message in result.stderr and "quorum show e --history" in result.stderr
    assert len(script.calls) == calls


@pytest.mark.server
async def test_a_failed_studio_thread_is_fixed_from_the_command_line(tmp_path: Path) -> None:
    """A run `langgraph dev` left failed is resumed and forked by `quorum`, from the same file;
    the server finds the checkpointer complete (no warnings), and deletes threads with it."""
    with OpenAIStub() as stub:
        settings = {
            "QUORUM_BASE_URL": stub.base_url,
            "QUORUM_API_KEY": "test",
            "QUORUM_MODEL": STUB_MODEL,
            "QUORUM_MAX_ATTEMPTS": "1",
        }
        with langgraph_dev(tmp_path, settings) as served:
            stub.fail(500, when=lambda body: schema_name(body) == "Ruling")
            async with get_client(url=served.url, api_key=None, timeout=RUN_TIMEOUT) as client:
                thread = (await client.threads.create())["thread_id"]
                await client.runs.wait(
                    thread, "debate", input={"input": "Tabs?"}, raise_error=False
                )
                doomed = (await client.threads.create())["thread_id"]
                await client.runs.wait(doomed, "react", input={"input": "6*7?"})
                assert served.checkpoint_count(doomed) > 0
                await client.threads.delete(doomed)
                deleted = served.checkpoint_count(doomed)
            asked_in_studio = asked(stub)
            env = {
                **isolated_environ(),
                **settings,
                "QUORUM_DATABASE": str(served.database),
            }

            def cli(*args: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    [sys.executable, "-m", "quorum.cli", *args],
                    env=env, capture_output=True, text=True, timeout=120,
                )  # fmt: skip

            failed = json.loads(cli("show", thread, "--json").stdout)
            resumed = cli("resume", thread)
            fixed = asked(stub) - asked_in_studio
            judged = next(
                c
                for c in json.loads(cli("show", thread, "--json").stdout)["checkpoints"]
                if c["agents"] == ["judge"]
            )
            forked = cli("resume", thread, "--from", judged["checkpoint_id"])
            loaded = served.log_text("custom checkpointer")
            missing = served.log_text("missing")

    assert failed["status"] == "failed" and "Verdict" not in json.dumps(failed["values"])
    assert resumed.returncode == 0, resumed.stderr
    assert fixed == Counter({"Ruling": 1}), fixed  # only the failed judge was asked again
    assert forked.returncode == 0, forked.stderr
    assert asked(stub)["Ruling"] == asked_in_studio["Ruling"] + 2
    assert deleted == 0
    assert "Using custom checkpointer: QuorumSqliteSaver" in loaded
    for warning in (
        "missing adelete_thread",
        "missing adelete_for_runs",
        "missing aprune",
        "missing acopy_thread",
    ):
        assert warning not in missing, missing


async def test_a_resume_asks_again_for_replies_that_failed_their_step(stub: OpenAIStub) -> None:
    # The planner's plans name a worker that does not exist until the stub is fixed: the run
    # fails with the planner out of repairs. Replaying its plans on resume would fail the same
    # way forever; the resume must ask again (counted at the server).
    fixed = False

    def plans(body: dict) -> dict | None:
        if schema_name(body) != "Plan":
            return None
        plan = valid_plan(body)
        if not fixed:
            plan["steps"][0]["worker"] = "poet"
        return plan

    stub.responder = plans
    context = quorum.QuorumContext(max_plan_repairs=1)
    with pytest.raises(quorum.RunFailed, match="no valid plan after 1 repairs"):
        await quorum.run("orchestrator", "Goal", thread_id="bad", context=context)
    failed_asks = asked(stub)["Plan"]
    assert failed_asks == 2

    with pytest.raises(quorum.RunFailed, match="no valid plan"):
        await quorum.resume("bad")
    assert asked(stub)["Plan"] == failed_asks + 1  # asked again, not replayed

    fixed = True
    resumed = await quorum.resume("bad")

    assert resumed.status == "completed"
    assert asked(stub)["Plan"] == failed_asks + 2


async def test_a_resume_asks_again_for_a_reply_that_stayed_hollow(stub: OpenAIStub) -> None:
    # The judge's ruling holds a placeholder through every repair; the run fails. A resume
    # asks again; the steps before the judge are replayed, not asked again.
    hollow = True

    def rulings(body: dict) -> dict | None:
        if schema_name(body) != "Ruling":
            return None
        answer = "value" if hollow else "spaces"
        return {"final_answer": answer, "winner": "a", "confidence": 0.5}

    stub.responder = rulings
    with pytest.raises(quorum.RunFailed, match="gave no valid Ruling after 2 repairs"):
        await quorum.run("debate", "Tabs or spaces?", thread_id="hollow")
    before = asked(stub)
    assert before["Ruling"] == 3

    hollow = False
    resumed = await quorum.resume("hollow")

    assert resumed.status == "completed" and resumed.output == "spaces"
    again = asked(stub) - before
    # The judge's weighing (the step's first call) is asked again with its ruling: both
    # were replies of the step that failed. Nothing before the judge is.
    assert again == Counter({None: 1, "Ruling": 1}), again
