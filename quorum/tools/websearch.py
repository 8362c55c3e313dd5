"""Web search: a provider interface, the Tavily provider, and the `web_search` tool.

A provider is anything with a `name` and an async `search(query, max_results)`; Tavily is
used when `QUORUM_TAVILY_API_KEY` (or `TAVILY_API_KEY`) is set. With no provider, or no way
to reach it, `web_search` fails with a non-retryable error that points the agent at the
local document search, so an offline deployment degrades to its own documents instead of
looping on a tool that cannot work.
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol

import httpx
from pydantic import BaseModel, Field, SecretStr, ValidationError

from quorum.settings import get_settings
from quorum.tools.contract import ToolError, agent_tool

TAVILY_ENDPOINT = "https://api.tavily.com/search"

_OFFLINE_SUGGESTION = (
    "use search_documents to search the local document collection instead; do not retry"
)


class WebResult(BaseModel):
    """One web page a search found."""

    title: str = Field(description="The page title.")
    url: str = Field(description="Its URL; http_fetch reads the page, if the host is allowed.")
    snippet: str = Field(description="The passage that matched.")
    score: float | None = Field(default=None, description="The provider's relevance score.")


class WebSearch(BaseModel):
    """Web search results, best first."""

    query: str = Field(description="The query as given.")
    provider: str = Field(description="Which search service answered.")
    results: list[WebResult] = Field(description="Pages found, best first.")


class SearchProvider(Protocol):
    """A web search service."""

    name: str

    async def search(self, query: str, max_results: int) -> list[WebResult]:
        """Search the web; raise ToolError when the service cannot answer."""
        ...


class TavilyProvider:
    """Tavily's search API (https://tavily.com), which needs an API key."""

    name = "tavily"

    def __init__(
        self, api_key: SecretStr, *, endpoint: str | None = None, timeout: float = 20.0
    ) -> None:
        self._api_key = api_key
        self._endpoint = endpoint or TAVILY_ENDPOINT
        self._timeout = timeout

    async def search(self, query: str, max_results: int) -> list[WebResult]:
        """Ask Tavily for the top `max_results` pages about `query`."""
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                response = await client.post(
                    self._endpoint,
                    json={"query": query, "max_results": max_results},
                    headers={"Authorization": f"Bearer {self._api_key.get_secret_value()}"},
                )
        except httpx.TimeoutException as error:
            raise ToolError(
                "the web search service did not answer in time",
                retryable=True,
                suggestion="try again, or use search_documents",
            ) from error
        except httpx.TransportError as error:
            raise ToolError(
                f"the web search service cannot be reached ({type(error).__name__}): "
                "this deployment may have no network",
                retryable=False,
                suggestion=_OFFLINE_SUGGESTION,
            ) from error
        return _tavily_results(response)


def _tavily_results(response: httpx.Response) -> list[WebResult]:
    if response.status_code in (401, 403):
        raise ToolError(
            "the web search service refused the API key",
            retryable=False,
            suggestion="ask the operator to check QUORUM_TAVILY_API_KEY; "
            "meanwhile use search_documents",
        )
    if response.status_code == 429 or response.status_code >= 500:
        raise ToolError(
            f"the web search service is unavailable ({response.status_code})",
            retryable=True,
            suggestion="try again later, or use search_documents",
        )
    try:
        response.raise_for_status()
        payload: Any = response.json()
        return [
            WebResult(
                title=str(item.get("title") or item.get("url", "")),
                url=str(item["url"]),
                snippet=str(item.get("content", ""))[:1000],
                score=item.get("score"),
            )
            for item in payload.get("results", [])
        ]
    except (httpx.HTTPStatusError, ValueError, KeyError, TypeError, AttributeError) as error:
        # ValidationError is a ValueError: a malformed answer lands here too.
        raise ToolError(
            f"the web search service gave an unusable answer ({type(error).__name__})",
            retryable=False,
            suggestion="use search_documents instead",
        ) from error


def search_provider() -> SearchProvider | None:
    """The configured web search provider, or None when there is none."""
    settings = get_settings()
    if settings.tavily_api_key is None or not settings.tavily_api_key.get_secret_value():
        return None
    return TavilyProvider(settings.tavily_api_key)


@agent_tool(untrusted=True, available=lambda: search_provider() is not None)
async def web_search(
    query: Annotated[str, Field(min_length=1, max_length=400, description="What to search for.")],
    max_results: Annotated[int, Field(ge=1, le=10, description="How many results.")] = 5,
) -> WebSearch:
    """Search the public web and return pages with titles, URLs and snippets.

    Use for: recent events, public facts and sources the local documents do not cover;
    search_documents first when the topic may be in the local collection. Read a result in
    full with http_fetch(url=...), if its host is allowed.
    Do not use for: local documents or policies (use search_documents), arithmetic (use
    calculator), or today's date (use current_time). If it reports that no provider is
    configured or there is no network, do not retry: use search_documents.
    Example: web_search(query="latest IPCC report key findings", max_results=5)
    """
    provider = search_provider()
    if provider is None:
        raise ToolError(
            "web search is not available: no search provider is configured",
            retryable=False,
            suggestion=_OFFLINE_SUGGESTION,
        )
    try:
        results = await provider.search(query, max_results)
    except ValidationError as error:
        # From a provider's own parsing: not the agent's arguments, so not its fault.
        raise ToolError(
            f"the web search provider {provider.name} gave an unusable answer",
            retryable=False,
            suggestion="use search_documents instead",
        ) from error
    return WebSearch(query=query, provider=provider.name, results=results[:max_results])


TOOLS = [web_search]
