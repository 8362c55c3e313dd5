"""Each pattern end to end through its compiled graph, with a SQLite checkpointer."""

from __future__ import annotations

from contextlib import asynccontextmanager

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

import quorum
from quorum import checkpoints
from quorum.checkpoints import open_checkpointer, open_persistence
from quorum.context import QuorumContext
from quorum.models import STRUCTURED_REPAIRS
from quorum.nodes.debate import KEPT, same_answer
from quorum.state import FactCheck, Summary, Verdict
from quorum.testing import Script, debater, stating
from quorum.threads import compile_pattern


async def test_orchestrator_runs_plan_and_synthesizes(script: Script) -> None:
    result = await quorum.run("orchestrator", "Explain boiling")

    assert result.status == "completed"
    assert result.output == "# Final answer\nAll steps merged."
    assert set(result.values["results"]) == {"s1", "s2", "s3"}
    # The writer saw its dependencies' results and nothing else.
    writer_prompt = [c for c in script.calls if c.agent == "writer"][0].messages[-1].text
    assert "Result of step s1" in writer_prompt and "Result of step s2" in writer_prompt
    researcher_prompt = [c for c in script.calls if c.agent == "researcher"][0].messages[-1].text
    assert "Result of step" not in researcher_prompt
    planner = result.usage["planner"]
    # It thinks the plan through in text, then writes it in the schema: two calls.
    assert {k: planner[k] for k in ("calls", "input_tokens", "output_tokens", "attempts")} == {
        "calls": 2, "input_tokens": 20, "output_tokens": 10, "attempts": 2,
    }  # fmt: skip
    thinking, writing = [c for c in script.calls if c.agent == "planner"]
    assert isinstance(writing.messages[-2], AIMessage)
    assert thinking.messages[-1].text == "Goal: Explain boiling"
    assert writing.messages[-2].text.startswith("Research and analysis can run at once")
    assert planner["cost_usd"] == 0.0 and planner["seconds"] >= 0
    assert {"researcher", "analyst", "writer", "synthesizer"} <= set(result.usage)


async def test_pipeline_stages_in_order_with_typed_outputs(script: Script) -> None:
    result = await quorum.run("pipeline", "Water")

    assert result.status == "completed"
    assert result.output.startswith("# Water")
    assert isinstance(result.values["summary"], Summary)
    assert isinstance(result.values["fact_check"], FactCheck)
    # research and fact_check each take a turn with tools, then give their typed output;
    # summarize writes its summary in prose, then lists its claims.
    assert [c.agent for c in script.calls] == [
        "research",
        "research",
        "summarize",
        "summarize",
        "fact_check",
        "fact_check",
        "format_report",
    ]


async def test_pipeline_fact_check_sends_summary_back_once(script: Script) -> None:
    script.on("fact_check", lambda a, m: {"verdict": "unsupported", "unsupported_claims": ["x"]})

    result = await quorum.run("pipeline", "Water")

    stages = [c.agent for c in script.calls]
    assert [a for i, a in enumerate(stages) if i == 0 or a != stages[i - 1]] == [
        "research",
        "summarize",
        "fact_check",
        "summarize",
        "fact_check",
        "format_report",
    ]
    revision = [c for c in script.calls if c.agent == "summarize"][2]
    assert "x" in revision.messages[-1].text  # the revision names the rejected claim
    assert result.values["revisions"] == 1
    assert result.status == "completed"


async def test_pipeline_research_and_fact_check_consult_the_documents(script: Script) -> None:
    def searching(agent, messages):
        if any(isinstance(m, ToolMessage) for m in messages):
            return {"findings": [{"claim": "found it", "source": "doc"}]}
        return AIMessage(
            "", tool_calls=[{"name": "search_documents", "args": {"query": "boiling"}, "id": "s"}]
        )

    script.on("research", searching).on(
        "fact_check",
        lambda a, m: (
            {"verdict": "supported", "unsupported_claims": []}
            if any(isinstance(x, ToolMessage) for x in m)
            else AIMessage(
                "",
                tool_calls=[{"name": "search_documents", "args": {"query": "boiling"}, "id": "f"}],
            )
        ),
    )

    result = await quorum.run("pipeline", "Water")

    notes_call = [c for c in script.calls if c.agent == "research"][-1]
    results = [m for m in notes_call.messages if isinstance(m, ToolMessage)]
    assert results and results[0].status == "success" and '"hits"' in results[0].text
    assert result.values["notes"].findings[0].claim == "found it"
    assert result.usage["research"]["calls"] == 3  # tool turn, answer turn, typed notes
    assert result.usage["fact_check"]["calls"] == 3


async def test_debate_rounds_and_structured_verdict(script: Script) -> None:
    result = await quorum.run("debate", "Tabs or spaces?", context=QuorumContext(max_rounds=2))

    verdict = result.values["verdict"]
    assert isinstance(verdict, Verdict)
    assert (verdict.winner, verdict.confidence) == ("a", 0.8)
    assert result.output == verdict.final_answer
    # answer + 2 x (critique + revise) per debater: each working ends on an "Answer:" line,
    # read as the claim, so no structured turn follows it
    assert script.count("debater_a") == 5 and script.count("debater_b") == 5
    assert script.count("judge") == 2  # it weighs in text, then rules
    assert verdict.rationale == "Debater a's answer is clearer."
    assert result.values["positions"]["a"].answer == "debater_a revised"
    assert result.values["agreement"] == {"a": False, "b": False}
    # A critique is prose, and the other side reads the reasoning, not only the answer.
    critique = next(c for c in script.calls if "Critique that answer" in c.messages[-1].text)
    assert "weighs it." in critique.messages[-1].text


async def test_a_debater_without_an_answer_line_states_its_claim_in_the_schema(
    script: Script,
) -> None:
    def unlabelled(agent, messages):
        reply = debater(agent, messages)
        return reply.replace("Answer: ", "So: ") if isinstance(reply, str) else reply

    script.on("debater_a", unlabelled)

    result = await quorum.run("debate", "Tabs or spaces?", context=QuorumContext())

    # answer (reason, state) + critique + revise (reason, state); b read both from its lines
    assert [script.count(agent) for agent in ("debater_a", "debater_b")] == [5, 3]
    assert result.values["positions"]["a"].answer == "debater_a revised"


async def test_a_revision_that_states_no_answer_keeps_the_earlier_one_for_the_judge(
    script: Script,
) -> None:
    def stuck(agent, messages):
        if any("Revise your answer" in m.text for m in messages if isinstance(m, HumanMessage)):
            return "I revise nothing." if not stating(messages) else {"answer": "}"}
        return debater(agent, messages)

    script.on("debater_b", stuck)

    result = await quorum.run("debate", "Tabs or spaces?", context=QuorumContext())

    kept = result.values["positions"]["b"]
    assert (kept.answer, kept.kept) == ("debater_b answer", True)
    assert result.values["positions"]["a"].kept is False
    # the hollow claim, then each repair: every attempt asked, the run not failed
    assert script.count("debater_b") == 1 + 1 + 1 + 1 + STRUCTURED_REPAIRS
    judged = script.calls[-1].messages[1].text
    assert f"Debater b's answer{KEPT}: debater_b answer" in judged


async def test_debate_ends_early_when_both_agree(script: Script) -> None:
    def agreeing(agent, messages):
        reply = debater(agent, messages)
        return reply.replace(f"{agent} revised", "tabs") if isinstance(reply, str) else reply

    script.on("debater_a", agreeing).on("debater_b", agreeing)

    result = await quorum.run("debate", "Tabs or spaces?", context=QuorumContext(max_rounds=3))

    # answer, critique, revise: both now say "tabs", and code, not the debaters, sees it
    assert script.count("debater_a") == 3
    assert (result.values["round"], result.values["agreement"]) == (1, {"a": True, "b": True})


async def test_debaters_who_open_with_the_same_answer_go_straight_to_the_judge(
    script: Script,
) -> None:
    def opening(agent, messages):
        reply = debater(agent, messages)
        own = "398 km" if agent == "debater_a" else "398"
        return reply.replace(f"{agent} answer", own) if isinstance(reply, str) else reply

    script.on("debater_a", opening).on("debater_b", opening)

    result = await quorum.run("debate", "How far is the train?", context=QuorumContext())

    # one answer each, then the judge: no critique, no revision
    assert [script.count(agent) for agent in ("debater_a", "debater_b", "judge")] == [1, 1, 2]
    assert (result.values["round"], result.values["agreement"]) == (0, {"a": True, "b": True})
    judged = script.calls[-1].messages[1].text
    assert "398 km" in judged and "Debater b's answer: 398" in judged


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ("398", "398 km", True),
        ("1,234", "1234.0", True),
        ("PostgreSQL.", "postgresql", True),
        ("127", "-127", False),
        ("6 left of 11", "6", False),
        ("Use PostgreSQL 16", "Use SQLite 16", False),
        ("", "", False),
    ],
)
def test_answers_count_as_the_same_only_when_plain_code_can_tell(
    first: str, second: str, same: bool
) -> None:
    assert same_answer(first, second) is same


async def test_debaters_use_their_own_personas(script: Script) -> None:
    context = QuorumContext(debater_a_persona="a pirate", debater_b_persona="a judge of taste")
    await quorum.run("debate", "Best sea?", context=context)

    first = {c.agent: c.messages[0].text for c in script.calls[:2]}
    assert "a pirate" in first["debater_a"] and "a judge of taste" in first["debater_b"]


async def test_react_calls_tool_and_answers(script: Script) -> None:
    result = await quorum.run("react", "What is 6 times 7?")

    assert result.status == "completed"
    assert result.values["status"] == "answered"
    assert result.output == "The answer is 42."
    assert result.values["steps"] == 1


async def test_react_step_limit_ends_with_status_and_history(script: Script) -> None:
    def always_tool(agent, messages):
        return __import__("langchain_core.messages", fromlist=["AIMessage"]).AIMessage(
            "", tool_calls=[{"name": "calculator", "args": {"expression": "1+1"}, "id": "c"}]
        )

    script.on("agent", always_tool)

    result = await quorum.run("react", "Loop forever", context=QuorumContext(max_steps=3))

    assert result.status == "step_limit"
    assert result.values["status"] == "step_limit"
    assert "step limit (3)" in result.output
    assert result.values["steps"] == 3
    assert script.count("agent") == 3
    assert len(result.values["messages"]) == 1 + 3 * 2  # task + 3 x (call, result)


async def test_state_survives_in_sqlite_and_reloads_strictly(script: Script, db: str) -> None:
    result = await quorum.run("debate", "Tabs or spaces?")

    # A fresh process view of the store: the pydantic state types load back as themselves.
    reloaded = await quorum.get_thread(result.thread_id, database=db)
    assert isinstance(reloaded.values["verdict"], Verdict)
    assert reloaded.output == result.output
    assert [h.agents for h in reloaded.history][:2] == [["moderator"], ["debater_a", "debater_b"]]
    async with open_checkpointer(db) as saver:
        assert await saver.aget_tuple({"configurable": {"thread_id": result.thread_id}})


async def test_a_pattern_is_compiled_once_per_opened_database(tmp_path) -> None:
    async with open_persistence(str(tmp_path / "a.db")) as kept:
        react = compile_pattern(kept, "react")
        assert compile_pattern(kept, "react") is react
        assert compile_pattern(kept, "debate") is not react
        assert react.checkpointer is kept.saver and react.store is kept.store
    async with open_persistence(str(tmp_path / "b.db")) as other:
        assert compile_pattern(other, "react").checkpointer is other.saver


async def test_runs_in_a_database_block_share_one_opened_database(
    script: Script, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    real = checkpoints.open_persistence

    @asynccontextmanager
    async def counted(target: str | None = None, **kwargs):
        opened.append(str(target))
        async with real(target, **kwargs) as kept:
            yield kept

    monkeypatch.setattr(checkpoints, "open_persistence", counted)
    db = str(tmp_path / "runs.db")
    async with quorum.database(db):
        done = [await quorum.run("react", "What is 2+2?", database=db) for _ in range(3)]
    assert opened == [db]
    assert [info.status for info in done] == ["completed"] * 3
    # The block closed it: the next run opens it again.
    await quorum.run("react", "What is 2+2?", database=db)
    assert opened == [db, db]
