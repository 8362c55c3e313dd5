"""One rate limiter per endpoint, shared by parallel workers, measured at the server.

A plan of 16 independent steps runs 16 workers at once. The scripted server allows only
`LIMIT` chat requests at a time and answers 429 beyond, as a provider's concurrency limit
does; the server counts what it refused. With QUORUM_MAX_CONCURRENT_REQUESTS at the limit
(and a requests-per-second limit too) nothing is refused; without it, the same run is.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import quorum
from quorum.context import QuorumContext
from quorum.settings import get_settings
from quorum.testing.stub import STUB_MODEL, OpenAIStub

WORKERS = 16
LIMIT = 3


def wide_plan(body: dict[str, Any]) -> dict[str, Any]:
    """Sixteen steps with no dependencies: all sent to workers in one wave."""
    return {
        "steps": [
            {"id": f"s{i}", "worker": "analyst", "task": f"Weigh option {i}.", "dependencies": []}
            for i in range(WORKERS)
        ]
    }


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIStub]:
    with OpenAIStub() as running:
        running.schema_replies["Plan"] = wide_plan
        running.max_concurrent = LIMIT
        # Each reply takes a while, so the workers' requests overlap at the server.
        running.delay = 0.3
        monkeypatch.setenv("QUORUM_BASE_URL", running.base_url)
        monkeypatch.setenv("QUORUM_API_KEY", "test")
        monkeypatch.setenv("QUORUM_MODEL", STUB_MODEL)
        # One attempt per call: a refusal fails the run, it does not hide in a retry.
        monkeypatch.setenv("QUORUM_MAX_ATTEMPTS", "1")
        get_settings.cache_clear()
        yield running


async def run_wide_plan(db: str) -> quorum.ThreadInfo:
    return await quorum.run(
        "orchestrator",
        "Compare sixteen options.",
        context=QuorumContext(max_plan_steps=WORKERS),
        database=db,
    )


@pytest.mark.slow
async def test_parallel_workers_share_the_endpoint_limit_and_none_is_refused(
    stub: OpenAIStub, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUORUM_MAX_CONCURRENT_REQUESTS", str(LIMIT))
    monkeypatch.setenv("QUORUM_REQUESTS_PER_SECOND", "100")
    get_settings.cache_clear()

    info = await run_wide_plan(db)

    assert info.status == "completed", info.error
    assert len(info.values["results"]) == WORKERS
    requests = stub.chat_requests()
    # The planner (thinking, plan), 16 analysts (a calculator call, then an answer each), the
    # synthesizer.
    assert len(requests) == 2 + 2 * WORKERS + 1
    assert stub.rejected() == []
    assert {r.status for r in requests} == {200}
    # The workers did run in parallel, up to the limit and never beyond it.
    assert stub.most_concurrent == LIMIT


async def test_without_the_limit_the_same_plan_trips_the_servers_429s(
    stub: OpenAIStub, db: str
) -> None:
    """The control: the server's limit is real, so the test above can fail."""
    with pytest.raises(quorum.RunFailed):
        await run_wide_plan(db)

    assert stub.rejected(), "16 workers at once should exceed the server's limit"


def test_a_client_that_keeps_to_the_limit_is_never_refused() -> None:
    """The stub counts a request out before its reply's last bytes, not after.

    Counting out after them let a client that sends its next request the moment a reply
    arrives get a 429 it did not earn (a CI failure of the test above). Counting out is
    made slow here, so that race would refuse every second request.
    """
    with OpenAIStub() as stub:
        stub.max_concurrent = 1
        leave = stub._leave

        def slow_leave() -> None:
            time.sleep(0.05)
            leave()

        stub._leave = slow_leave  # type: ignore[method-assign]
        body = {"model": STUB_MODEL, "messages": [{"role": "user", "content": "hi"}]}
        with httpx.Client(base_url=stub.base_url) as client:
            statuses = [client.post("/chat/completions", json=body).status_code for _ in range(6)]

    assert statuses == [200] * 6
    assert stub.rejected() == []
