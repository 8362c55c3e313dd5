"""The model seam against a real OpenAI-compatible server (the scripted stub on loopback):
what it asks each kind of endpoint for, and how it repairs what comes back."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from llama_cpp.llama_grammar import json_schema_to_gbnf

import quorum
from quorum import models
from quorum.context import QuorumContext
from quorum.errors import ModelError, RunFailed
from quorum.metering import metered
from quorum.models import structured
from quorum.settings import Settings, get_settings
from quorum.state import Verdict
from quorum.testing.stub import STUB_MODEL, OpenAIStub, schema_name

QUESTION = [SystemMessage("You judge."), HumanMessage("Tabs or spaces?")]


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch):
    with OpenAIStub() as running:
        monkeypatch.setenv("QUORUM_BASE_URL", running.base_url)
        monkeypatch.setenv("QUORUM_MODEL", STUB_MODEL)
        get_settings.cache_clear()
        yield running


@metered
async def judge_node() -> dict:
    """A node asking for a verdict: its update carries the usage the seam metered."""
    return {"verdict": await models.ask_structured("judge", QuorumContext(), QUESTION, Verdict)}


async def test_a_request_carries_its_messages_as_the_client_sends_them(stub: OpenAIStub) -> None:
    # Quorum's ChatOpenAI hands the messages to the openai client in extra_body, past its
    # per-message type walk: the body is the one the client would have sent.
    await judge_node()
    [body] = stub.chat_bodies()
    assert list(body)[:3] == ["model", "stream", "messages"]
    assert body["messages"] == [
        {"role": "system", "content": "You judge."},
        {"role": "user", "content": "Tabs or spaces?"},
    ]


async def test_json_object_mode_sends_the_schema_and_max_tokens(stub: OpenAIStub) -> None:
    update = await judge_node()
    verdict, usage = update["verdict"], update["usage"]

    assert isinstance(verdict, Verdict)
    body = stub.chat_bodies()[-1]
    assert body["response_format"]["type"] == "json_object"
    schema = body["response_format"]["schema"]
    # A capable model's answer is not cut short; only the grammar's shape is tightened.
    assert "maxLength" not in schema["properties"]["rationale"]
    assert schema["additionalProperties"] is False
    # llama.cpp ignores max_completion_tokens; the classic field is what it honours.
    assert body["max_tokens"] == get_settings().max_output_tokens
    assert "max_completion_tokens" not in body
    assert (body["temperature"], body["seed"]) == (0.0, 7)
    assert usage["judge"]["calls"] == 1 and usage["judge"]["output_tokens"] > 0


@pytest.mark.parametrize(
    ("small", "declared", "sent"),
    [
        (False, 2048, None),  # too long for a grammar: dropped, pydantic still checks it
        (False, 64, 64),
        (False, None, None),
        (True, 2048, models.MAX_STRING),  # the embedded model gets short bounds everywhere
        (True, None, models.MAX_STRING),
        (True, 20, 20),
    ],
)
def test_grammar_bounds(small: bool, declared: int | None, sent: int | None) -> None:
    field = {"type": "string"} | ({"maxLength": declared} if declared else {})
    schema = {"type": "object", "properties": {"url": field, "tags": {"type": "array"}}}

    fitted = structured._for_grammar(schema, small=small)

    assert fitted["properties"]["url"].get("maxLength") == sent
    assert fitted["properties"]["tags"].get("maxItems") == (models.MAX_ITEMS if small else None)
    assert fitted["additionalProperties"] is False


@pytest.mark.parametrize(
    ("choice", "short"), [("smollm2-135m", True), ("qwen2.5-coder-1.5b", False)]
)
def test_only_the_small_embedded_model_gets_short_strings(choice: str, short: bool) -> None:
    """SmolLM2 fills a string until it runs out of tokens; Qwen's working is not cut short."""
    settings = Settings(embedded_model=choice, base_url=None, api_key=None)
    target = models.endpoint(settings)

    sent = structured._response_format(Verdict, "Verdict", target)["schema"]

    assert target.embedded and target.short_strings is short
    rationale = sent["properties"]["rationale"]
    assert rationale.get("maxLength") == (models.MAX_STRING if short else None)


def test_grammar_bounds_numbers() -> None:
    """Bounded numbers become a choice of in-range values; unbounded ones stay free."""
    schema = structured._for_grammar(Verdict.model_json_schema(), small=True)
    confidence = schema["properties"]["confidence"]
    assert "type" not in confidence
    assert confidence["enum"][0] == 0 and confidence["enum"][-1] == 1
    assert len(confidence["enum"]) == models.NUMBER_STEPS + 1
    # llama.cpp's own converter turns the choice into a grammar of exactly those numbers.
    grammar = json_schema_to_gbnf(json.dumps(schema))
    assert '"0.05"' in grammar and '"1.0"' in grammar
    steps = structured._for_grammar({"type": "integer", "minimum": 1, "maximum": 5}, small=False)
    assert steps["enum"] == [1, 2, 3, 4, 5]
    wide = {"type": "integer", "minimum": 0, "maximum": 10**6}
    assert structured._for_grammar(wide, small=False) == wide
    assert structured._for_grammar({"type": "number"}, small=False) == {"type": "number"}


async def test_json_schema_mode_is_openai_strict(
    stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUORUM_STRUCTURED_OUTPUT", "json_schema")
    get_settings.cache_clear()

    await models.ask_structured("judge", QuorumContext(), QUESTION, Verdict)

    body = stub.chat_bodies()[-1]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["name"] == "Verdict"
    assert body["response_format"]["json_schema"]["strict"] is True
    assert schema_name(body) == "Verdict"


async def test_invalid_reply_is_repaired_with_the_error(stub: OpenAIStub) -> None:
    replies = iter(['{"final_answer": "x"', None])
    stub.responder = lambda body: next(replies)

    update = await judge_node()

    assert isinstance(update["verdict"], Verdict)
    # Two answered calls (the reply and its repair), one request each.
    assert update["usage"]["judge"]["calls"] == 2 and update["usage"]["judge"]["attempts"] == 2
    repair = stub.chat_bodies()[-1]["messages"][-1]["content"]
    assert "not valid JSON for the required schema" in repair


async def test_reply_that_never_validates_is_a_clear_error(stub: OpenAIStub) -> None:
    stub.responder = lambda body: '{"winner": "nobody"}'

    with pytest.raises(ModelError, match="agent 'judge' gave no valid Verdict after 2 repairs"):
        await models.ask_structured("judge", QuorumContext(), QUESTION, Verdict)

    assert len(stub.chat_bodies()) == models.STRUCTURED_REPAIRS + 1


async def test_react_uses_native_tool_calls_on_a_server_that_has_them(stub: OpenAIStub) -> None:
    thread = await quorum.run("react", "What is 6 times 7?")

    bodies = stub.chat_bodies()
    assert "calculator" in [t["function"]["name"] for t in bodies[0]["tools"]]
    assert thread.values["status"] == "answered"
    tool_result = thread.values["messages"][2]
    assert json.loads(tool_result.content)["value"] == 42


async def test_react_uses_json_actions_where_tool_calls_are_missing(
    stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUORUM_TOOL_CALLING", "json")
    get_settings.cache_clear()
    actions = iter(
        [
            {"action": "calculator", "action_input": {"expression": "6*7"}, "thought": "math"},
            {"action": "final_answer", "action_input": {"answer": "42"}, "thought": "done"},
        ]
    )
    stub.responder = lambda body: next(actions)

    thread = await quorum.run("react", "What is 6 times 7?")

    bodies = stub.chat_bodies()
    assert all("tools" not in body for body in bodies)
    grammar = bodies[0]["response_format"]["schema"]["anyOf"]
    assert {option["properties"]["action"]["const"] for option in grammar} >= {
        "calculator",
        "final_answer",
    }
    # The tool call and its result go back as plain turns the server understands.
    assert [m["role"] for m in bodies[1]["messages"]][-2:] == ["assistant", "user"]
    assert "Result of calculator" in bodies[1]["messages"][-1]["content"]
    assert thread.output == "42"
    assert json.loads(thread.values["messages"][2].content)["value"] == 42


async def test_transient_server_error_is_retried(stub: OpenAIStub) -> None:
    stub.fail(500, times=1)

    thread = await quorum.run("debate", "Q?")

    assert thread.status == "completed"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("}", "only JSON punctuation"),
        ('"]', "only JSON punctuation"),
        ("  ", "is empty"),
        ("value", "placeholder"),
        ("Final answer.", "placeholder"),
        ("final_answer", "placeholder"),  # the field's own name
        ("bytes", "placeholder"),  # a type's name where its value belongs
        ("The answer the judge settles on.", "description"),
        ('{"reasoning": "4 plus 4", "answer": 8}', "holds JSON"),
        ('reasoning": "so 417.", "answer": 417', "copy of the JSON reply"),
    ],
)
async def test_a_hollow_answer_is_repaired_with_what_was_wrong(
    stub: OpenAIStub, value: str, problem: str
) -> None:
    good = {"final_answer": "spaces", "winner": "a", "rationale": "clearer", "confidence": 0.5}
    replies = iter([{**good, "final_answer": value}, good])
    stub.responder = lambda body: next(replies)

    verdict = await models.ask_structured("judge", QuorumContext(), QUESTION, Verdict)

    assert verdict.final_answer == "spaces"
    repair = stub.chat_bodies()[-1]["messages"][-1]["content"]
    assert problem in repair and "'final_answer'" in repair


@pytest.mark.parametrize("value", ["421", "Spaces, for consistency.", "N/A is not an answer", "a"])
def test_real_values_are_not_hollow(value: str) -> None:
    assert models.hollow(value, "final_answer", "The answer the judge settles on.") is None


async def test_a_placeholder_final_action_is_repaired(
    stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUORUM_TOOL_CALLING", "json")
    get_settings.cache_clear()
    actions = iter(
        [
            {"thought": "so 42", "action": "final_answer", "action_input": {"answer": "value"}},
            {"thought": "so 42", "action": "final_answer", "action_input": {"answer": "42"}},
        ]
    )
    stub.responder = lambda body: next(actions)

    thread = await quorum.run("react", "What is 6 times 7?")

    assert thread.output == "42"
    schema = stub.chat_bodies()[0]["response_format"]["schema"]["anyOf"][0]
    # The model reasons before it commits to an action and its input.
    assert list(schema["properties"]) == ["thought", "action", "action_input"]
    assert "placeholder" in stub.chat_bodies()[-1]["messages"][-1]["content"]


@pytest.mark.parametrize(
    ("thought", "output"),
    [("The result of 6*7 is indeed 42.", "The result of 6*7 is indeed 42."), ("}", None)],
    ids=["stated-in-the-thought", "nowhere"],
)
async def test_an_answer_field_never_repaired_falls_back_to_a_thought_that_states_it(
    stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch, thought: str, output: str | None
) -> None:
    """At temperature 0 a repair can come back the same: the calculator's JSON result copied
    into the answer three times, under a thought that said the answer in plain text."""
    monkeypatch.setenv("QUORUM_TOOL_CALLING", "json")
    get_settings.cache_clear()
    copied = {"answer": '{"expression":"6*7","value":42}'}
    stub.responder = lambda body: {
        "thought": thought, "action": "final_answer", "action_input": copied
    }  # fmt: skip

    if output is None:
        with pytest.raises(RunFailed, match="gave no real final answer after 2 repairs"):
            await quorum.run("react", "What is 6 times 7?")
    else:
        thread = await quorum.run("react", "What is 6 times 7?")
        assert (thread.status, thread.output) == ("completed", output)
    assert len(stub.chat_bodies()) == 1 + models.STRUCTURED_REPAIRS


async def test_out_of_repairs_the_first_thought_is_the_answer_not_one_about_the_repair(
    stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Repaired twice, a 1.5B analyst's later thoughts were about the repair ("The answer
    should be a JSON object with the value directly"); its first said "Sam has $160"."""
    monkeypatch.setenv("QUORUM_TOOL_CALLING", "json")
    get_settings.cache_clear()
    thoughts = iter(["Sam has $160 after saving and spending."] + ["Write the value directly."] * 2)
    copied = {"answer": '{"value":160}'}
    stub.responder = lambda body: {
        "thought": next(thoughts), "action": "final_answer", "action_input": copied
    }  # fmt: skip

    thread = await quorum.run("react", "How many dollars does Sam have?")

    assert thread.output == "Sam has $160 after saving and spending."


def test_each_sample_gets_a_seed_of_its_own_and_the_same_on_every_run() -> None:
    seeds = [models.sample_seed(7, index) for index in range(5)]

    assert len(set(seeds)) == 5
    assert seeds == [models.sample_seed(7, index) for index in range(5)]
    assert seeds != [models.sample_seed(8, index) for index in range(5)]


@pytest.mark.parametrize(
    ("working", "claim"),
    [
        ("3 + 4 = 7.\nAnswer: 7", "7"),
        ("Working.\n**Answer:** 279 km\n", "279 km"),
        ("Answer: 5\nOn reflection, 6.\nFinal Answer: 6", "6"),
        ("Working.\nAnswer: value", None),  # a placeholder: left to the structured turn
        ('Working.\nAnswer: {"result": 279}', None),  # JSON: the same
        ("The answer is 7.", None),  # no line of its own
    ],
)
def test_a_claim_is_read_from_the_last_answer_line_that_holds_one(
    working: str, claim: str | None
) -> None:
    assert models.stated(working) == claim
