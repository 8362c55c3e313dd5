"""Fuzzed arguments for every registered tool: a structured answer every time, never a crash.

Arguments are drawn from each tool's own input schema, mixed with wrongly typed values,
unknown keys and hostile strings. Each call goes through `call_tool` as an agent's would,
under a watchdog that turns a hang into a failure: the tool must answer with its result or
a structured failure that is not the catch-all for unexpected exceptions.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.tools import BaseTool

from quorum.tools import all_tools, websearch
from quorum.tools.contract import MAX_OUTPUT_CHARS, ToolFailure, call_tool, unfenced
from tests.tools.loopback import LoopbackServer, Reply

HOSTILE = [
    "", " ", "\x00", "\ud800", "..", "../../etc/passwd", "/etc/passwd", "~/.ssh/id_rsa",
    "notes/../../x", "a/" * 300, "%2e%2e%2f", "\\\\server\\share", "file:///etc/passwd",
    "http://127.0.0.1/", "http://[::1]:1/", "http://2130706433/", "http://a.test/" + "x" * 3000,
    "javascript:alert(1)", "1e999", "9**9**9", "factorial(10**6)", "(" * 400, "-" * 499 + "1",
    "round(1, -10**9)", "__import__('os')", "'; DROP TABLE files; --", '" OR 1=1', "NEAR(a b)",
    "*", "title:x", "é" * 2000, "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "Europe/../../etc/passwd", "America",
    "water-boiling-point.md", "notes/todo.md", "x" * 10_000, "\n\r\t", "<script>",
]  # fmt: skip
ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def typed(field: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of the field's JSON type: mostly within its bounds, sometimes past them."""
    if field["type"] == "integer":
        low, high = field.get("minimum", -5), field.get("maximum", 5000)
        return st.one_of(
            st.integers(low, high),
            st.integers(low, high),
            st.integers(),
            st.sampled_from([2**63, -(2**63), 10**30]),
        )
    if field["type"] == "string":
        return st.one_of(
            st.text(max_size=min(field.get("maxLength", 300), 300)), st.sampled_from(HOSTILE)
        )
    return st.booleans()


def arguments(tool: BaseTool) -> st.SearchStrategy[dict[str, Any]]:
    """Argument dicts for `tool`: two in three well-typed, the rest anything at all."""
    schema = tool.get_input_schema().model_json_schema()
    fields, required = schema["properties"], set(schema.get("required", []))
    well_typed = st.fixed_dictionaries(
        {name: typed(field) for name, field in fields.items() if name in required},
        optional={name: typed(field) for name, field in fields.items() if name not in required},
    )
    chaotic = st.builds(
        lambda mine, more: {**more, **mine},
        st.fixed_dictionaries(
            {},
            optional={name: st.one_of(typed(f), ANYTHING) for name, f in fields.items()},
        ),
        st.dictionaries(st.text(max_size=8), ANYTHING, max_size=2),
    )
    return st.one_of(well_typed, well_typed, chaotic)


class Hang(Exception):
    pass


@contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Raise Hang in the main thread if the block runs longer than `seconds`."""

    def fire(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def open_tools(
    tmp_path: Path,
    configure: Callable[..., None],
    canary: LoopbackServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every tool usable, so fuzzing reaches past the settings into the tools' own code."""
    workspace = tmp_path / "workspace"
    (workspace / "notes").mkdir(parents=True)
    (workspace / "notes" / "todo.md").write_text("buy milk\n")
    canary.routes["/search"] = Reply(
        200,
        json.dumps(
            {"results": [{"title": "t", "url": "https://a.test/", "content": "c"}]}
        ).encode(),
        {"Content-Type": "application/json"},
    )
    monkeypatch.setattr(websearch, "TAVILY_ENDPOINT", f"{canary.origin}/search")
    configure(
        workspace_dir=workspace,
        approve_tools="write_file",
        http_allowlist=f"127.0.0.1:{canary.port},a.test",
        tavily_api_key="tvly-fuzz",
        http_timeout=2,
    )


@pytest.mark.parametrize("tool", all_tools(), ids=lambda t: t.name)
@pytest.mark.slow
def test_fuzzed_arguments_get_a_structured_answer(tool: BaseTool, open_tools: None) -> None:
    answers: list[str] = []  # the tool messages' texts

    async def call(args: dict[str, Any]) -> None:
        message = await call_tool([tool], {"name": tool.name, "args": args, "id": "fuzz"})
        assert message.status in ("success", "error")
        if message.status == "error":
            failure = ToolFailure.model_validate_json(unfenced(message.text))
            assert "failed unexpectedly" not in failure.error, (args, failure)
            assert "did not finish" not in failure.error, (args, failure)
            assert failure.suggestion
        elif len(unfenced(message.text)) <= MAX_OUTPUT_CHARS:
            json.loads(unfenced(message.text))
        else:
            assert "[output cut at" in message.text
        answers.append(message.text)

    @settings(
        max_examples=200,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(args=arguments(tool))
    def check(args: dict[str, Any]) -> None:
        with watchdog(10):
            asyncio.run(call(args))

    check()

    assert len(answers) >= 200
    # The fuzzing reached past argument validation into the tool itself.
    assert sum(not text.startswith('{"error":"invalid arguments') for text in answers) >= 50


@pytest.mark.slow
def test_fuzzed_pages_get_a_structured_answer(
    configure: Callable[..., None], canary: LoopbackServer
) -> None:
    """What an allowed server sends back is untrusted too: any body, any declared type."""
    configure(http_allowlist=f"127.0.0.1:{canary.port}", http_max_bytes=4000)
    [http_fetch] = [tool for tool in all_tools() if tool.name == "http_fetch"]
    statuses: list[str] = []

    async def fetch() -> None:
        call = {"name": "http_fetch", "args": {"url": f"{canary.origin}/page"}, "id": "f"}
        message = await call_tool([http_fetch], call)
        if message.status == "error":
            failure = ToolFailure.model_validate_json(unfenced(message.text))
            assert "failed unexpectedly" not in failure.error
        statuses.append(message.status)

    @settings(max_examples=100, derandomize=True, database=None, deadline=None)
    @given(
        body=st.one_of(
            st.binary(max_size=5000),
            st.text(max_size=3000).map(str.encode),
            st.sampled_from([b"<html><title>t</title><![if x", b"<script>" * 100, b"\xff\xfe"]),
        ),
        content_type=st.one_of(
            st.sampled_from(
                [
                    "text/html",
                    "text/html; charset=latin-1",
                    "text/plain; charset=bogus",
                    "application/json",
                    "image/png",
                    "",
                    "text/html; charset=utf-16",
                ]
            ),
            st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
        ),
        status=st.sampled_from([200, 204, 301, 404, 418, 500]),
    )
    def check(body: bytes, content_type: str, status: int) -> None:
        headers = {"Content-Type": content_type} if content_type else {}
        canary.routes["/page"] = Reply(status, body, headers)
        with watchdog(10):
            asyncio.run(fetch())

    check()

    assert len(statuses) >= 100 and "success" in statuses and "error" in statuses
