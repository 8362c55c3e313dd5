"""Where Quorum leans on a framework's private parts: every use named here, and only here.

Each has no public way to do what Quorum needs (as of the locked versions); each is listed in
`PRIVATE_USES` with where it is used and why, and `tests/test_framework.py` checks every one
against the installed packages, so the upgrade that breaks one fails loudly, in one test,
naming it. Ruff bans importing these names anywhere else (pyproject's banned-api).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langgraph.graph.message import (
    _messages_delta_reducer as messages_delta_reducer,
)

__all__ = [
    "CHAT_PAYLOAD_HOOK",
    "PREGEL_PUSH",
    "PREGEL_TASKS",
    "PRIVATE_USES",
    "TRACER_HOOKS",
    "PrivateUse",
    "become",
    "messages_delta_reducer",
]


@dataclass(frozen=True)
class PrivateUse:
    """One private part of a framework Quorum uses."""

    package: str
    name: str
    """The private name (a module attribute, a method, a channel or key)."""
    where: str
    """The Quorum module that uses it."""
    why: str
    """What Quorum needs that no public API gives."""


PREGEL_TASKS = "__pregel_tasks"
"""The checkpoint channel holding the `Send` packets a step runs (a push task's input)."""
PREGEL_PUSH = "__pregel_push"
"""The first element of a push task's path; the second indexes `PREGEL_TASKS`."""

TRACER_HOOKS = ("_persist_run_single", "_on_chain_end", "_update_run_single")
"""The LangChainTracer methods `telemetry.QuorumTracer` overrides."""


CHAT_PAYLOAD_HOOK = "_get_request_payload"
"""The ChatOpenAI method that builds a request's payload, which `quorum.models.client`'s
ChatOpenAI overrides."""


def become(instance: Any, cls: type) -> None:
    """Give a compiled graph a subclass of its own class that adds checks (no state)."""
    instance.__class__ = cls


PRIVATE_USES = (
    PrivateUse(
        "langgraph",
        "langgraph.graph.message._messages_delta_reducer",
        "quorum.state",
        "the message reducer for a DeltaChannel (a conversation stored as deltas, so a long "
        "thread's checkpoints stay small); LangGraph exports DeltaChannel but not its reducer",
    ),
    PrivateUse(
        "langgraph",
        f"checkpoint channel {PREGEL_TASKS!r} and task path {PREGEL_PUSH!r}",
        "quorum.dry_run",
        "a pending Send task's input (which worker, which plan step), to name the step a resume "
        "would run; StateSnapshot.tasks gives no input",
    ),
    PrivateUse(
        "langgraph",
        "CompiledStateGraph instance __class__ assignment",
        "quorum.graphs.pattern",
        "compile() builds its own class; PatternGraph adds input and settings checks to "
        "stream/astream on the compiled graph (langgraph dev and Studio call them directly)",
    ),
    PrivateUse(
        "langsmith",
        "LangChainTracer." + ", ".join(TRACER_HOOKS),
        "quorum.telemetry",
        "the last moment a run can be renamed, stripped of run settings and secrets, and given "
        "its usage before it is sent to LangSmith; the tracer has no public hook",
    ),
    PrivateUse(
        "langchain-openai",
        f"ChatOpenAI.{CHAT_PAYLOAD_HOOK}",
        "quorum.models.client",
        "a request's messages handed to the openai client in extra_body, past its per-message "
        "type walk (0.2 ms a message on every request: 40 ms a step late in a long thread); "
        "ChatOpenAI has no public hook on the payload it sends",
    ),
    PrivateUse(
        "llama-cpp-python",
        "Llama.generate, Llama.create_chat_completion, Llama._model.vocab",
        "quorum.embedded",
        "the server streams no usage: the counts it reports unstreamed are taken where it "
        "takes them (prompt tokens, each generated token but an end-of-generation one)",
    ),
)
