"""The scripted OpenAI-compatible stub streams replies in pieces, as OpenAI does."""

from __future__ import annotations

import json

from quorum.testing.stub import MAX_PIECES, chunks_of

COMPLETION = {
    "id": "chatcmpl-1",
    "created": 0,
    "model": "stub-model",
    "choices": [{"message": {"content": None}, "finish_reason": "tool_calls"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


def streamed(content: str | None, arguments: str) -> tuple[list[dict], str, str]:
    completion = json.loads(json.dumps(COMPLETION))
    completion["choices"][0]["message"]["content"] = content
    call = {"id": "call_1", "function": {"name": "write_file", "arguments": arguments}}
    chunks = list(chunks_of(completion, [call], include_usage=True))
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    text = "".join(d.get("content") or "" for d in deltas)
    calls = [t for d in deltas for t in d.get("tool_calls", [])]
    args = "".join(t["function"]["arguments"] for t in calls)
    return chunks, text, args


def test_a_short_reply_comes_in_small_pieces() -> None:
    chunks, text, args = streamed("Hello there, this is a reply of some length.", '{"path": "a"}')

    assert (text, args) == ("Hello there, this is a reply of some length.", '{"path": "a"}')
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert [p for p in pieces if p] == [text[:24], text[24:]]


def test_a_long_tool_call_comes_whole_in_at_most_max_pieces_chunks() -> None:
    arguments = json.dumps({"path": "report.md", "content": "x" * 600_000})

    chunks, _, args = streamed(None, arguments)

    assert args == arguments
    # The role, the call's head, its pieces, the finish and the usage.
    assert len(chunks) <= MAX_PIECES + 4
