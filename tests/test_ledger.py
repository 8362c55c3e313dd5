"""The ledger: what a thread's model calls spent, checked against what the endpoint served.

Counts come from the scripted OpenAI-compatible server (every request it received, the
status it answered and the usage it reported), never from Quorum's own report.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import (
    AIMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    convert_to_openai_messages,
)
from typer.testing import CliRunner

import quorum
from quorum import journal
from quorum.cli import app
from quorum.metering import Ledger, LedgerRow
from quorum.settings import get_settings
from quorum.state import total_usage
from quorum.testing import ScriptedChatModel
from quorum.testing.crash import PATTERN_INPUTS, Harness, Plan, canonical, describe, judge
from quorum.testing.stub import CHAT_PATH, STUB_MODEL, OpenAIStub, Recorded

PRICE_IN, PRICE_OUT = 10_000.0, 40_000.0
"""US dollars per million input and output tokens of the stub's model."""


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[OpenAIStub]:
    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps({STUB_MODEL: {"input_per_mtok": PRICE_IN, "output_per_mtok": PRICE_OUT}})
    )
    monkeypatch.setenv("QUORUM_PRICES", str(prices))
    with OpenAIStub() as running:
        monkeypatch.setenv("QUORUM_BASE_URL", running.base_url)
        monkeypatch.setenv("QUORUM_API_KEY", "test-key")
        monkeypatch.setenv("QUORUM_MODEL", STUB_MODEL)
        monkeypatch.setenv("QUORUM_RETRY_WAIT", "0.05")
        get_settings.cache_clear()
        yield running


def chat(requests: list[Recorded]) -> list[Recorded]:
    return [r for r in requests if r.path == CHAT_PATH and r.body is not None]


async def test_ledger_totals_equal_the_calls_the_endpoint_served(stub: OpenAIStub, db: str) -> None:
    stub.fail(500, times=2)  # two failed attempts, retried
    info = await quorum.run("orchestrator", "Plan a product launch", database=db)
    ledger = await quorum.ledger(info.thread_id, database=db)
    served = chat(stub.requests)
    answered = [r for r in served if r.status == 200]

    assert info.status == "completed"
    assert ledger == info.ledger
    assert ledger.total.calls == len(answered) >= 6
    assert ledger.total.attempts == len(served) == len(answered) + 2
    assert ledger.total.errors == 2
    assert ledger.total.input_tokens == sum(r.usage["prompt_tokens"] for r in answered if r.usage)
    assert ledger.total.output_tokens == sum(
        r.usage["completion_tokens"] for r in answered if r.usage
    )
    billed = sum(
        r.usage["prompt_tokens"] * PRICE_IN + r.usage["completion_tokens"] * PRICE_OUT
        for r in answered
        if r.usage
    )
    assert ledger.total.cost_usd == pytest.approx(billed / 1e6)
    # Per agent adds up to the total; one run made every call.
    assert {"planner", "synthesizer"} <= set(ledger.agents)
    assert sum(row.calls for row in ledger.agents.values()) == ledger.total.calls
    assert sum(row.attempts for row in ledger.agents.values()) == ledger.total.attempts
    assert [row.calls for row in ledger.runs] == [ledger.total.calls]
    assert 0 < ledger.total.p50_seconds <= ledger.total.p95_seconds <= ledger.total.seconds
    # The checkpoint's usage, counted at the nodes, agrees with the journal's ledger.
    counted = info.values["usage"]
    assert sum(u["calls"] for u in counted.values()) == ledger.total.calls


@pytest.mark.parametrize("pattern", list(PATTERN_INPUTS))
async def test_every_model_call_is_counted_by_the_agent_step_that_made_it(
    stub: OpenAIStub, db: str, pattern: str
) -> None:
    """A node that asks the model wired with `add_node` instead of `add_agent` would spend
    without its usage reaching the checkpoint."""
    info = await quorum.run(pattern, PATTERN_INPUTS[pattern], database=db)
    answered = [r for r in chat(stub.requests) if r.status == 200]

    assert info.status == "completed"
    assert total_usage(info.values["usage"])["calls"] == len(answered) >= 2


async def test_show_and_run_print_the_ledger(stub: OpenAIStub, db: str) -> None:
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["run", "react", "What is 6*7?", "--thread", "r1", "--db", db]
    )
    ledger = await quorum.ledger("r1", database=db)
    shown = await asyncio.to_thread(CliRunner().invoke, app, ["show", "r1", "--db", db])

    assert result.exit_code == 0, result.output
    assert shown.exit_code == 0, shown.output
    for printed in (result.stderr, shown.stdout):
        total = next(line for line in printed.splitlines() if line.strip().startswith("total"))
        cells = total.split()
        assert cells[1:4] == [
            str(ledger.total.calls),
            f"{ledger.total.input_tokens:,}",
            f"{ledger.total.output_tokens:,}",
        ]
        assert cells[-2:] == [str(ledger.total.attempts), str(ledger.total.errors)]
    assert ledger.total.calls == len(chat(stub.requests))


async def test_ledger_of_an_unknown_thread_says_so(db: str) -> None:
    with pytest.raises(quorum.QuorumError, match="no thread 'nope'"):
        await quorum.ledger("nope", database=db)


@pytest.mark.slow
def test_ledger_counts_each_call_once_across_a_kill_and_resume(tmp_path: Path) -> None:
    with Harness(tmp_path, forked=True) as harness:
        baseline = harness.measure_baseline("orchestrator", runs=1)
        since = len(harness.stub.requests)
        # Killed while the first worker's request is held, once the planner's replies are
        # journaled: a kill drawn in time can land before any reply is settled on a fast run.
        trial = harness.trial(Plan("orchestrator", "killed", (), at_call=3), baseline)
        served = chat(harness.stub.requests[since:])
        ledger = asyncio.run(quorum.ledger("killed", database=harness.database))
    verdict = judge(trial, baseline)

    assert verdict.ok, describe(verdict)
    assert trial.kills == 1 and verdict.completed_at_kill > 0, describe(verdict)
    # Each call once, whatever was asked twice; attempts are the requests whose outcome
    # reached the journal (a request the kill cut off lived only in the dead process).
    asked_again = len(verdict.rerequested_completed) + len(verdict.rerequested_near_kill)
    assert ledger.total.calls == baseline.requests
    assert ledger.total.attempts == len(served) - verdict.cut_off - asked_again
    # Tokens as the server reported them, once per distinct request.
    reported = {canonical(r.body): r.usage for r in served if r.body and r.usage}
    assert len(reported) == baseline.requests
    assert ledger.total.input_tokens == sum(u["prompt_tokens"] for u in reported.values())
    assert ledger.total.output_tokens == sum(u["completion_tokens"] for u in reported.values())
    # The killed run and the resume each got replies: one ledger row per run.
    assert len(ledger.runs) == 2
    assert sum(row.calls for row in ledger.runs) == ledger.total.calls


def test_journal_records_from_before_the_ledger_still_read() -> None:
    # A record as an older Quorum stored it: no start time, no run.
    old = {
        "agent": "planner",
        "model": STUB_MODEL,
        "reply": None,
        "attempts": 2,
        "errors": ["HTTP 500", "HTTP 500"],
        "input_tokens": 0,
        "output_tokens": 0,
        "seconds": 0.0,
        "cost_usd": 0.0,
        "run_seconds": 0.0,
    }
    record = journal.CallRecord.from_json(old)
    answered = journal.CallRecord.from_json({**old, "reply": None, "attempts": 1, "errors": []})
    answered.reply = AIMessage("plan")
    answered.input_tokens, answered.output_tokens, answered.seconds = 10, 5, 0.5

    ledger = Ledger.of([record, answered])

    assert (record.started_at, record.run) == (0.0, "")
    assert ledger.total == LedgerRow(
        calls=1,
        input_tokens=10,
        output_tokens=5,
        seconds=0.5,
        p50_seconds=0.5,
        p95_seconds=0.5,
        attempts=3,
        errors=2,
    )
    assert ledger.agents == {"planner": ledger.total}


def _digest_as_before(agent: str, model: Any, messages: list[Any]) -> str:
    """The request digest as Quorum computed it before it kept each message's JSON."""
    request = {
        "agent": agent,
        "model": journal.describe_model(model),
        "messages": convert_to_openai_messages(list(messages)),
    }
    encoded = json.dumps(request, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def test_request_digests_are_those_of_journals_already_written() -> None:
    # Journal keys hold the digest: a thread journaled before must replay after an upgrade.
    model = ScriptedChatModel(agent="agent", script=None).bind_tools(["calculator"])
    call = {"name": "calculator", "args": {"expression": "6 * 7"}, "id": "c1"}
    conversation: list[Any] = [
        SystemMessage("You solve tasks."),
        HumanMessage('Wie viel ist 6 × 7? \ud800 "quoted"'),
        AIMessage("", tool_calls=[call]),
        ToolMessage('{"value": 42.0}', tool_call_id="c1", name="calculator"),
        AIMessage([{"type": "text", "text": "Two"}, {"type": "text", "text": "blocks"}]),
        HumanMessage([{"type": "tool_result", "tool_use_id": "c1", "content": "42"}]),
        ("user", "a tuple"),
        "plain text",
    ]
    for end in range(len(conversation) + 1):
        asked = conversation[:end]
        assert journal.request_digest("agent", model, asked) == _digest_as_before(
            "agent", model, asked
        )
    # Asked again, from the JSON it kept; and made again when a message's field is replaced.
    again = journal.request_digest("agent", model, conversation)
    assert again == _digest_as_before("agent", model, conversation)
    conversation[1].content = "What is 6 * 8?"
    changed = journal.request_digest("agent", model, conversation)
    assert changed == _digest_as_before("agent", model, conversation) != again


def test_percentiles_are_latencies_that_were_seen() -> None:
    calls = []
    for n in range(1, 21):
        call = journal.CallRecord(agent="a", model="m", reply=AIMessage("x"), attempts=1)
        call.seconds = float(n)
        calls.append(call)

    row = LedgerRow.of(calls)

    assert (row.calls, row.seconds, row.p50_seconds, row.p95_seconds) == (20, 210.0, 10.0, 19.0)
    assert LedgerRow.of([]) == LedgerRow()


async def test_a_long_lived_process_keeps_a_bounded_number_of_meters() -> None:
    # The LangGraph server drives runs with no driver to drop their meters when they end:
    # a process that serves thousands of runs keeps only the most recently used.
    from langgraph.store.memory import InMemoryStore

    from quorum import metering

    store = InMemoryStore()
    metering._meters.clear()
    for run in range(metering.MAX_METERS + 500):
        await metering.run_meter(store, f"thread-{run}", "run")

    assert len(metering._meters) == metering.MAX_METERS
    assert ("thread-0", "run") not in metering._meters
    latest = (f"thread-{metering.MAX_METERS + 499}", "run")
    assert list(metering._meters)[-1] == latest
    metering._meters.clear()


async def test_a_run_the_langgraph_server_drives_drops_its_meter_when_it_ends(script) -> None:
    """A run started on the compiled graph itself (as `langgraph dev` and the LangGraph server
    do, with no Quorum driver around it) drops its meter when it ends."""
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.store.memory import InMemoryStore

    from quorum import metering
    from quorum.graphs import PATTERNS

    metered_during: list[bool] = []

    def answer(agent, messages):
        metered_during.append(any(key[0] == "srv1" for key in metering._meters))
        return "4"

    script.on("agent", answer)
    graph = PATTERNS["react"].compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config = {"configurable": {"thread_id": "srv1"}, "metadata": {"run_id": "r1"}}
    await graph.ainvoke({"input": "What is 2+2?"}, config)

    assert metered_during == [True]
    assert not any(key[0] == "srv1" for key in metering._meters)


async def test_a_runs_new_calls_look_nothing_up_and_its_resume_replays(
    script, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's meter knows its thread's journal (read once, when the meter is seeded; not at
    all by a run that started its thread), so a call never made before is not looked up,
    and a later run looks up the calls that are there."""
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.store.memory import InMemoryStore

    from quorum.graphs import PATTERNS

    looked_up: list[str] = []
    read = journal.JournalEntry.read

    async def counted(entry: journal.JournalEntry) -> journal.CallRecord | None:
        looked_up.append(entry.key)
        return await read(entry)

    monkeypatch.setattr(journal.JournalEntry, "read", counted)
    searched: list[str] = []
    search = journal.keyed_records

    async def listed(store: Any, thread_id: str) -> list[tuple[str, journal.CallRecord]]:
        searched.append(thread_id)
        return await search(store, thread_id)

    monkeypatch.setattr(journal, "keyed_records", listed)
    monkeypatch.setenv("QUORUM_MAX_ATTEMPTS", "1")  # a failed attempt fails its step
    get_settings.cache_clear()
    script.on("agent", lambda agent, messages: "4")
    first = await quorum.run("react", "What is 2+2?", thread_id="j1", database=db)
    assert first.status == "completed" and script.count("agent") == 1
    # A run that started its thread knows its journal is empty: not even read to seed the
    # meter. (The read-back after the run reads it whole, for the ledger.)
    assert looked_up == [] and searched == ["j1"]

    # A call whose attempt failed is in the journal (its attempts are): the resume's run
    # looks it up, and asks again.
    failures = iter([json.JSONDecodeError("a cut-off reply", "{", 1)])

    def flaky(agent: str, messages: list) -> str:
        if (failure := next(failures, None)) is not None:
            raise failure
        return "4"

    script.on("agent", flaky)
    with pytest.raises(quorum.RunFailed):
        await quorum.run("react", "What is 2+2?", thread_id="j2", database=db)
    assert looked_up == []
    searched.clear()
    resumed = await quorum.resume("j2", database=db)
    assert resumed.status == "completed" and len(looked_up) == 1
    assert searched == ["j2"] * 3  # the thread read before, the meter seeded, the read-back

    # A graph invoked by hand (as `langgraph dev` does): LangGraph gives each run an id.
    looked_up.clear()
    graph = PATTERNS["react"].compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    await graph.ainvoke({"input": "What is 2+2?"}, {"configurable": {"thread_id": "j3"}})
    assert looked_up == [] and script.count("agent") == 4
