"""Per-agent usage, recorded where the model is called.

The model seam reports every call here, replayed from the journal or answered now, with
its attempts and tokens. A node decorated with `metered` hands what its calls spent to the
checkpoint as the state's `usage`, once, when it finishes: no node counts usage by hand, and
a call is counted once however many times its task runs (a replayed call reports the
tokens and attempts it was recorded with, a task that fails reports nothing until it
finishes on resume).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from langgraph.types import Command

from quorum.state import Usage, add_usage

_spent: ContextVar[dict[str, Usage] | None] = ContextVar("quorum_spent", default=None)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def record(agent: str, *, input_tokens: int, output_tokens: int, attempts: int) -> None:
    """Count one answered model call of `agent` toward the running node's usage."""
    spent = _spent.get()
    if spent is None:
        return  # a call outside a metered node (a user calling `ask` directly)
    usage = Usage(
        calls=1, input_tokens=input_tokens, output_tokens=output_tokens, attempts=attempts
    )
    spent.update(add_usage(spent, {agent: usage}))


def metered(node: F) -> F:
    """Make `node` report the usage of every model call it makes in its `usage` update."""

    @functools.wraps(node)
    async def run(*args: Any, **kwargs: Any) -> Any:
        spent: dict[str, Usage] = {}
        token = _spent.set(spent)
        try:
            update = await node(*args, **kwargs)
        finally:
            _spent.reset(token)
        if not spent:
            return update
        if isinstance(update, Command):
            values = dict(update.update or {})
            values["usage"] = add_usage(values.get("usage"), spent)
            return Command(
                graph=update.graph, update=values, resume=update.resume, goto=update.goto
            )
        return {**(update or {}), "usage": add_usage((update or {}).get("usage"), spent)}

    return run  # type: ignore[return-value]
