"""What each graph tells and checks of its callers: input and output schemas, run settings.

Studio draws its forms from these schemas, and every way in (Python, the CLI, `langgraph
dev`) goes through the same checks: a wrong key or a bad setting is refused with a message
that names it, before anything runs; no context means the defaults.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from typer.testing import CliRunner

import quorum
from quorum.cli import app
from quorum.context import QuorumContext
from quorum.errors import UsageError
from quorum.graphs import PATTERNS
from quorum.state import Verdict
from quorum.testing import Script

REQUIRED_WORDS = {
    "orchestrator": "goal",
    "pipeline": "topic",
    "debate": "question",
    "react": "task",
}


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_input_schema_asks_for_one_required_text(pattern: str) -> None:
    schema = PATTERNS[pattern].compile().get_input_jsonschema()

    assert schema["required"] == ["input"]
    assert list(schema["properties"]) == ["input"]
    assert schema["additionalProperties"] is False
    field = schema["properties"]["input"]
    assert field["type"] == "string" and field["minLength"] == 1
    assert REQUIRED_WORDS[pattern] in field["description"].lower()


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_output_schema_is_the_answer_and_usage_not_the_whole_state(pattern: str) -> None:
    graph = PATTERNS[pattern].compile()
    outputs = set(graph.get_output_jsonschema()["properties"])
    state = set(graph.builder.schemas[graph.builder.state_schema])

    assert {"output", "usage"} <= outputs < state
    assert "input" not in outputs


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_settings_are_published_once(pattern: str) -> None:
    graph = PATTERNS[pattern].compile()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation warning on the way either
        assert "configurable" not in graph.config_schema().model_fields
    assert "max_steps" in graph.get_context_jsonschema()["properties"]


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"goal": "x"}, "input: Field required; goal: Extra inputs are not permitted"),
        ({"input": ""}, "input: String should have at least 1 character"),
        ({"input": "   "}, "input: String should match pattern"),
        ({"input": 42}, "input: Input should be a valid string"),
    ],
)
async def test_a_bad_input_is_refused_naming_the_key(
    script: Script, given: dict[str, Any], named: str
) -> None:
    graph = PATTERNS["react"].compile()

    with pytest.raises(UsageError, match=f"invalid input for the react pattern: {named}"):
        await graph.ainvoke(given)
    assert script.calls == []


def cli_error(*args: str) -> str:
    result = CliRunner().invoke(app, ["run", "react", "Hi", *args])
    assert result.exit_code == 2, result.output
    return " ".join(result.output.split())


@pytest.mark.parametrize(
    "context",
    [{"max_steps": 0}, QuorumContext(max_steps=0)],
    ids=["dict", "dataclass"],
)
async def test_a_bad_setting_is_refused_with_the_clis_message(script: Script, context: Any) -> None:
    graph = PATTERNS["react"].compile()

    with pytest.raises(UsageError) as refused:
        await graph.ainvoke({"input": "Hi"}, context=context)

    assert script.calls == []
    assert str(refused.value) in cli_error("--set", "max_steps=0")
    assert refused.value.message.startswith("invalid context setting: max_steps: ")


async def test_an_unknown_setting_is_refused() -> None:
    with pytest.raises(UsageError, match="unknown context setting max_stepz"):
        await PATTERNS["react"].compile().ainvoke({"input": "Hi"}, context={"max_stepz": 3})


@pytest.mark.parametrize("pattern", list(PATTERNS))
async def test_a_graph_runs_without_a_context(script: Script, pattern: str) -> None:
    values = await PATTERNS[pattern].compile().ainvoke({"input": "Tabs or spaces?"})

    assert values["output"].strip()
    assert values["usage"]


async def test_your_own_checkpointer_with_quorums_serializer_makes_quorum_threads(
    script: Script, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from quorum.graphs.debate import builder

    db = str(tmp_path / "mine.db")
    caplog.set_level(logging.WARNING)
    async with aiosqlite.connect(db) as conn:
        saver = AsyncSqliteSaver(conn, serde=quorum.serializer())
        graph = builder.compile(checkpointer=saver)
        config: Any = {"configurable": {"thread_id": "mine"}}
        await graph.ainvoke({"input": "Tabs or spaces?"}, config, context={"max_rounds": 2})
        saved = await graph.aget_state(config)

    assert isinstance(saved.values["verdict"], Verdict)
    assert not [r for r in caplog.records if "unregistered type" in r.getMessage()]
    [listed] = await quorum.list_threads(database=db)
    assert (listed.thread_id, listed.pattern, listed.status) == ("mine", "debate", "completed")
    shown = await quorum.get_thread("mine", database=db)
    assert shown.values["round"] == 2 and shown.output == saved.values["output"]


@pytest.mark.parametrize("with_store", [True, False], ids=["store", "no-store"])
async def test_a_thread_continued_without_settings_keeps_those_it_ran_with(
    script: Script, with_store: bool
) -> None:
    """As a Studio or langgraph-sdk resume does: input None (or a Command), no context.

    With a store (the LangGraph server gives one), the settings are its run's record; without,
    they stay in every checkpoint's metadata.
    """
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.store.memory import InMemoryStore

    from quorum.graphs.debate import builder

    graph = builder.compile(
        checkpointer=InMemorySaver(serde=quorum.serializer()),
        store=InMemoryStore() if with_store else None,
        interrupt_before=["judge"],
    )
    config: Any = {"configurable": {"thread_id": "t"}}
    await graph.ainvoke({"input": "Tabs or spaces?"}, config, context={"max_rounds": 2})
    paused = await graph.aget_state(config)
    values = await graph.ainvoke(None, config)

    assert paused.next == ("judge",) and paused.values["round"] == 2
    assert values["verdict"].winner == "a"
    final = await graph.aget_state(config)
    assert ("quorum_context" not in final.metadata) is with_store
    if graph.store is not None:
        runs = await graph.store.asearch(("quorum_runs", "t"))
        assert [item.value["context"]["max_rounds"] for item in runs] == [2, 2]
    else:
        assert '"max_rounds": 2' in final.metadata["quorum_context"]
