"""web_search: without a provider it points to document search; Tavily against a loopback fake."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable

import pytest

from quorum.tools import websearch
from tests.tools.invoke import invoke
from tests.tools.loopback import LoopbackServer, Reply


async def test_no_provider_is_a_clear_non_retryable_error(
    connections: list[tuple[str, int]],
) -> None:
    status, result = await invoke("web_search", query="latest news")

    assert status == "error"
    assert result["error"] == "web search is not available: no search provider is configured"
    assert result["retryable"] is False
    assert "search_documents" in result["suggestion"]
    assert connections == []


@pytest.fixture
def tavily(
    canary: LoopbackServer, configure: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> LoopbackServer:
    monkeypatch.setattr(websearch, "TAVILY_ENDPOINT", f"{canary.origin}/search")
    configure(tavily_api_key="tvly-test-key")
    return canary


def _answer(server: LoopbackServer, status: int, payload: object) -> None:
    server.routes["/search"] = Reply(
        status, json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )


async def test_tavily_results(tavily: LoopbackServer) -> None:
    _answer(
        tavily,
        200,
        {
            "query": "boiling point",
            "results": [
                {
                    "title": "Boiling point",
                    "url": "https://a.test/b",
                    "content": "100 C",
                    "score": 0.9,
                },
                {"url": "https://c.test/d", "content": "at altitude", "score": 0.5},
            ],
        },
    )

    status, result = await invoke("web_search", query="boiling point", max_results=2)

    assert status == "success" and result["provider"] == "tavily"
    assert [(r["title"], r["url"], r["snippet"]) for r in result["results"]] == [
        ("Boiling point", "https://a.test/b", "100 C"),
        ("https://c.test/d", "https://c.test/d", "at altitude"),
    ]
    [request] = tavily.requests
    assert request.method == "POST"
    assert request.headers["Authorization"] == "Bearer tvly-test-key"
    assert json.loads(request.body) == {"query": "boiling point", "max_results": 2}


@pytest.mark.parametrize(
    ("status", "payload", "retryable", "calls"),
    [
        (401, {"detail": "bad key"}, False, 1),
        (500, {"detail": "oops"}, True, 3),
        (200, {"results": [{"title": "no url"}]}, False, 1),
        (200, ["not", "an", "object"], False, 1),
    ],
    ids=["bad-key", "server-error", "missing-url", "not-an-object"],
)
async def test_tavily_failures(
    tavily: LoopbackServer, status: int, payload: object, retryable: bool, calls: int
) -> None:
    _answer(tavily, status, payload)

    result_status, result = await invoke("web_search", query="anything")

    assert result_status == "error" and result["retryable"] is retryable
    assert "search_documents" in result["suggestion"]
    assert len(tavily.requests) == calls


async def test_no_network_is_non_retryable_and_suggests_document_search(
    configure: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A loopback port nobody listens on: the connection is refused, as without a network.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setattr(websearch, "TAVILY_ENDPOINT", f"http://127.0.0.1:{closed}/search")
    configure(tavily_api_key="tvly-test-key")

    status, result = await invoke("web_search", query="anything")

    assert status == "error" and result["retryable"] is False
    assert "no network" in result["error"]
    assert result["suggestion"].startswith("use search_documents")
