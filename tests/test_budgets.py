"""Budgets from outside: a model that never stops is stopped by each budget, then resumed.

The CLI runs as a separate process against the scripted OpenAI-compatible stub on loopback,
which keeps the usage of every reply it sends. The model never answers: every reply asks
for one more calculator call (long replies where tokens are the budget). Each budget (model
calls, tokens, cost, seconds; for the run, and for one agent of the orchestrator) must stop
the run within one model call of running out, exit 4 with `budget_exceeded` naming the
budget, and `quorum resume THREAD --set ...` with a larger budget must then complete it. The
usage the thread records must equal what the stub served, also when the process was killed
with SIGKILL mid-run: the budget then counts the calls made before the kill.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from quorum.testing import forks
from quorum.testing.stub import STUB_MODEL, OpenAIStub, Reply, quorum_env
from tests.test_crash import agent_of

CLI_TIMEOUT = 90.0
PRICES = {STUB_MODEL: {"input_per_mtok": 10_000.0, "output_per_mtok": 40_000.0}}
"""A cent per input token and four per output token: a few calls cost a few dollars."""
LONG = "I need one more figure before I can answer. " * 10

Json = dict[str, Any]


class CountingStub(OpenAIStub):
    """The stub, also keeping the usage of every reply it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.replies: list[tuple[Json, Json]] = []
        """(request body, usage) of every reply, in the order they were sent."""

    def completion(self, body: Json, reply: Reply) -> tuple[Json, list[Json]]:
        """Build the reply as the stub does, and keep its usage."""
        completion, calls = super().completion(body, reply)
        with self._lock:
            self.replies.append((body, completion["usage"]))
        return completion, calls

    @property
    def served(self) -> list[Json]:
        """The usage of every reply sent so far."""
        with self._lock:
            return [usage for _, usage in self.replies]


@pytest.fixture
def stub() -> Iterator[CountingStub]:
    running = CountingStub()
    with running:
        yield running


def env_for(stub: OpenAIStub, tmp_path: Path) -> dict[str, str]:
    """The CLI's environment: the stub, a price table for its model, this test's folders."""
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(PRICES))
    return quorum_env(stub, tmp_path) | {
        "QUORUM_PRICES": str(prices),
        "QUORUM_WORKSPACE_DIR": str(tmp_path / "workspace"),
        "QUORUM_MAX_ATTEMPTS": "1",
    }


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `quorum ARGS` to its end (killed if it outlives CLI_TIMEOUT), forked from a
    process that has imported Quorum (`quorum.testing.forks`)."""
    return forks.run(args, env=env, cwd=cwd, stdin=subprocess.DEVNULL, timeout=CLI_TIMEOUT)


def show(thread: str, *, env: dict[str, str], cwd: Path) -> Json:
    """`quorum show THREAD --json`, parsed."""
    shown = cli("show", thread, "--json", env=env, cwd=cwd)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def calculator_call(body: Json, *, content: str = "") -> Reply:
    """One more calculator call, whatever the conversation so far."""
    return Reply(
        content=content, tool_calls=[{"name": "calculator", "args": {"expression": "6*7"}}]
    )


def cost_of(usage: Json) -> float:
    """What the stub's price table makes of one reply's usage."""
    price = PRICES[STUB_MODEL]
    return (
        usage["prompt_tokens"] * price["input_per_mtok"]
        + usage["completion_tokens"] * price["output_per_mtok"]
    ) / 1e6


def tokens_of(usage: Json) -> int:
    return int(usage["prompt_tokens"] + usage["completion_tokens"])


def assert_usage_is_what_was_served(thread: Json, served: list[Json]) -> None:
    """The thread's recorded usage adds up to exactly the replies the stub sent."""
    usage = thread["usage"].values()
    assert sum(u["calls"] for u in usage) == len(served)
    assert sum(u["attempts"] for u in usage) == len(served)
    assert sum(u["input_tokens"] for u in usage) == sum(s["prompt_tokens"] for s in served)
    assert sum(u["output_tokens"] for u in usage) == sum(s["completion_tokens"] for s in served)
    assert sum(u["cost_usd"] for u in usage) == pytest.approx(sum(map(cost_of, served)))


@dataclass(frozen=True)
class Case:
    """One budget: the setting that caps it, the one that lifts it, and how near it stopped."""

    name: str
    limit: dict[str, Any]
    larger: dict[str, Any]
    check: Callable[[CountingStub, list[Json]], None]
    """Given the stub and the usage it served to the capped agent: stopped within one call."""
    content: str = ""
    delay: float = 0.0


def _calls(stub: CountingStub, served: list[Json]) -> None:
    # Checked before each request: the fourth is never sent.
    assert len(served) == 3


def _tokens(stub: CountingStub, served: list[Json]) -> None:
    spent = [tokens_of(u) for u in served]
    # The next call's input is estimated before it is sent: the budget is never overshot, and
    # the run stopped within about a call of it (the estimate runs a little high).
    assert sum(spent) <= 2000 < sum(spent) + 2 * spent[-1], spent
    assert len(served) >= 2


def _cost(stub: CountingStub, served: list[Json]) -> None:
    spent = [cost_of(u) for u in served]
    # Each call's input cost is estimated before it is sent: the budget is never overshot,
    # and the run stopped within about a call of it (the estimate runs a little high).
    assert sum(spent) <= 5.0 < sum(spent) + 2 * spent[-1], spent
    assert len(served) >= 2


def _seconds(stub: CountingStub, served: list[Json]) -> None:
    requests = stub.chat_requests()
    first, last = requests[0], requests[-1]
    # The last request started within the budget (a few ms of HTTP aside), and one more
    # reply as slow as the last would have ended past it.
    assert last.started - first.started <= 2.0 + 0.1
    assert last.finished - first.started + (last.finished - last.started) > 2.0
    assert len(served) >= 2


RUN_CASES = [
    Case("max_model_calls", {"max_model_calls": 3}, {"max_model_calls": 10}, _calls),
    Case("max_tokens", {"max_tokens": 2000}, {"max_tokens": 100_000}, _tokens, content=LONG),
    Case("max_cost_usd", {"max_cost_usd": 5.0}, {"max_cost_usd": 1000.0}, _cost),
    Case("max_seconds", {"max_seconds": 2.0}, {"max_seconds": 600}, _seconds, delay=0.5),
]


def settings(values: dict[str, Any]) -> list[str]:
    """`--set` options for run settings."""
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


@pytest.mark.parametrize("case", RUN_CASES, ids=[case.name for case in RUN_CASES])
@pytest.mark.slow
def test_run_budget_stops_an_endless_agent_and_a_larger_one_completes(
    stub: CountingStub, tmp_path: Path, case: Case
) -> None:
    env = env_for(stub, tmp_path)
    stub.responder = lambda body: calculator_call(body, content=case.content)
    stub.delay = case.delay
    limit = settings({"max_steps": 200, **case.limit})

    stopped = cli("run", "react", "What is six times seven?", "--thread", "b1", *limit,
                  env=env, cwd=tmp_path)  # fmt: skip

    assert stopped.returncode == 4, stopped.stderr
    thread = show("b1", env=env, cwd=tmp_path)
    assert thread["status"] == "budget_exceeded"
    assert thread["error"].startswith(f"budget exceeded: run {case.name}="), thread["error"]
    assert f"budget_exceeded: budget exceeded: run {case.name}=" in stopped.stderr
    case.check(stub, stub.served)
    assert_usage_is_what_was_served(thread, stub.served)

    stub.responder, stub.delay = None, 0.0  # the model answers from the tool result now
    resumed = cli("resume", "b1", *settings(case.larger), env=env, cwd=tmp_path)

    assert resumed.returncode == 0, resumed.stderr
    assert "status completed" in resumed.stderr
    thread = show("b1", env=env, cwd=tmp_path)
    assert thread["status"] == "completed"
    assert thread["output"] == 'The tool says: {"expression":"6*7","value":42}'
    assert_usage_is_what_was_served(thread, stub.served)


def _researcher_calls(stub: CountingStub, served: list[Json]) -> None:
    assert len(served) == 3


AGENT_CASES = [
    Case("max_model_calls", {"max_model_calls": 3}, {"max_model_calls": 10}, _researcher_calls),
    Case("max_tokens", {"max_tokens": 2000}, {"max_tokens": 100_000}, _tokens, content=LONG),
    Case("max_cost_usd", {"max_cost_usd": 5.0}, {"max_cost_usd": 1000.0}, _cost),
]


class ResearcherStub:
    """Responds as the researcher who never stops; every other agent answers by default."""

    def __init__(self, stub: CountingStub, content: str) -> None:
        self.content = content
        self.endless = True
        stub.responder = self

    def __call__(self, body: Json) -> Reply | None:
        if agent_of(body) == "researcher" and self.endless:
            return calculator_call(body, content=self.content)
        return None


@pytest.mark.parametrize("case", AGENT_CASES, ids=[case.name for case in AGENT_CASES])
@pytest.mark.slow
def test_agent_budget_stops_only_that_agent_and_a_larger_one_completes(
    stub: CountingStub, tmp_path: Path, case: Case
) -> None:
    env = env_for(stub, tmp_path)
    researcher = ResearcherStub(stub, case.content)
    budgets = {"researcher": case.limit}

    stopped = cli("run", "orchestrator", "Plan a launch", "--thread", "a1",
                  *settings({"max_tool_calls": 50, "agent_budgets": budgets}),
                  env=env, cwd=tmp_path)  # fmt: skip

    assert stopped.returncode == 4, stopped.stderr
    thread = show("a1", env=env, cwd=tmp_path)
    assert thread["status"] == "budget_exceeded"
    assert thread["error"].startswith(f"budget exceeded: agent 'researcher' {case.name}="), thread[
        "error"
    ]
    requests = Counter(agent_of(body) for body in stub.chat_bodies())
    # The planner (thinking, then planning) and the analyst (running beside the researcher:
    # a calculator call, then its answer) are not capped.
    assert (requests["planner"], requests["analyst"]) == (2, 2)
    researcher_served = [usage for body, usage in stub.replies if agent_of(body) == "researcher"]
    case.check(stub, researcher_served)
    stopped_thread, served_when_stopped = thread, stub.served

    researcher.endless = False
    more = {"agent_budgets": {"researcher": case.larger}}
    resumed = cli("resume", "a1", *settings(more), env=env, cwd=tmp_path)

    assert resumed.returncode == 0, resumed.stderr
    thread = show("a1", env=env, cwd=tmp_path)
    assert thread["status"] == "completed"
    requests = Counter(agent_of(body) for body in stub.chat_bodies())
    assert requests == Counter(
        planner=2, analyst=2, writer=1, synthesizer=1, researcher=len(researcher_served) + 1
    )
    assert_usage_is_what_was_served(thread, stub.served)
    # Checked last, so the resume above is checked whatever happens here: the stopped
    # thread's usage must already count the researcher's calls, as its budget did.
    assert stopped_thread["usage"].get("researcher", {}).get("calls") == len(researcher_served)
    assert_usage_is_what_was_served(stopped_thread, served_when_stopped)


@pytest.mark.slow
def test_budget_counts_calls_from_before_a_sigkill(stub: CountingStub, tmp_path: Path) -> None:
    env = env_for(stub, tmp_path)
    stub.responder = calculator_call
    # The third request (two tool results in it) is in flight when the process dies.
    third = stub.hold(lambda body: sum(m.get("role") == "tool" for m in body["messages"]) == 2)
    run = forks.start(
        ["run", "react", "What is six times seven?",
         "--thread", "k1", *settings({"max_steps": 200, "max_model_calls": 6})],
        env=env, cwd=tmp_path, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert third.arrived.wait(CLI_TIMEOUT)
        run.send_signal(signal.SIGKILL)
    finally:
        run.kill()
        run.wait(timeout=30)
    assert run.returncode == -signal.SIGKILL
    assert len(stub.served) == 2
    # The held request is never answered: only what was served counts.

    resumed = cli("resume", "k1", env=env, cwd=tmp_path)

    assert resumed.returncode == 4, resumed.stderr
    thread = show("k1", env=env, cwd=tmp_path)
    assert thread["status"] == "budget_exceeded"
    assert thread["error"] == "budget exceeded: run max_model_calls=6, spent 6 calls"
    # Two calls before the kill, the killed one asked again, three more: six in all.
    assert len(stub.served) == 6
    assert len(stub.chat_requests()) == 7
    assert_usage_is_what_was_served(thread, stub.served)

    stub.responder = None
    finished = cli("resume", "k1", "--set", "max_model_calls=8", env=env, cwd=tmp_path)

    assert finished.returncode == 0, finished.stderr
    thread = show("k1", env=env, cwd=tmp_path)
    assert thread["status"] == "completed"
    assert len(stub.served) == 7
    assert_usage_is_what_was_served(thread, stub.served)


@pytest.mark.slow
def test_step_limit_exits_4_and_more_steps_complete(stub: CountingStub, tmp_path: Path) -> None:
    env = env_for(stub, tmp_path)
    stub.responder = calculator_call

    stopped = cli("run", "react", "What is six times seven?", "--thread", "s1",
                  "--set", "max_steps=1", env=env, cwd=tmp_path)  # fmt: skip

    assert stopped.returncode == 4, stopped.stderr
    thread = show("s1", env=env, cwd=tmp_path)
    assert thread["status"] == "step_limit"
    assert len(stub.served) == 1
    assert_usage_is_what_was_served(thread, stub.served)

    stub.responder = None
    resumed = cli("resume", "s1", "--set", "max_steps=5", env=env, cwd=tmp_path)

    assert resumed.returncode == 0, resumed.stderr
    thread = show("s1", env=env, cwd=tmp_path)
    assert thread["status"] == "completed"
    assert thread["output"] == 'The tool says: {"expression":"6*7","value":42}'
    assert len(stub.served) == 2
    assert_usage_is_what_was_served(thread, stub.served)


def wide(width: int) -> Any:
    """A plan of `width` analysts with no dependencies: all sent to workers in one wave."""

    def plan(body: Json) -> Json:
        return {
            "steps": [
                {"id": f"s{i}", "worker": "analyst", "task": f"Weigh option {i}.",
                 "dependencies": []}
                for i in range(width)
            ]
        }  # fmt: skip

    return plan


@pytest.mark.parametrize(
    ("width", "budget", "limit"),
    [(6, "max_model_calls", 3), (8, "max_model_calls", 4), (6, "agent_budgets", 2)],
    ids=["3-of-6", "4-of-8", "agent-2-of-6"],
)
@pytest.mark.slow
def test_parallel_workers_never_send_more_calls_than_the_budget(
    stub: CountingStub, tmp_path: Path, width: int, budget: str, limit: int
) -> None:
    env = env_for(stub, tmp_path)
    stub.schema_replies["Plan"] = wide(width)
    stub.delay = 0.3  # replies slow enough that every worker's request is in flight at once
    given = (
        {"max_model_calls": limit}
        if budget == "max_model_calls"
        else {"agent_budgets": {"analyst": {"max_model_calls": limit}}}
    )
    args = settings({"max_plan_steps": width, **given})

    stopped = cli("run", "orchestrator", "Compare options.", "--thread", "w", *args,
                  env=env, cwd=tmp_path)  # fmt: skip

    assert stopped.returncode == 4, stopped.stderr
    thread = show("w", env=env, cwd=tmp_path)
    assert thread["status"] == "budget_exceeded", thread["error"]
    sent = [agent_of(body) for body in stub.chat_bodies()]
    # Counted at the server: the run's calls (the planner's included) or the agent's own.
    if budget == "max_model_calls":
        assert len(sent) == limit, sent
    else:
        assert sent.count("analyst") == limit, sent
