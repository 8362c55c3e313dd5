"""The effect ledger: a side effect happens at most once, and never silently twice.

A tool call with side effects is keyed by the thread, the checkpoint namespace of the tool
step running it (which ends in that step's task id, the same however often it runs) and the
model's tool call id. Before the tool runs, the ledger records the call as `started`; after,
as `completed` or `failed`, with the result the agent saw. When the step runs again (after a
crash, or a resume):

- a `completed` or `failed` call is not run: its recorded result is returned;
- a call that `started` but has no recorded outcome may or may not have happened (the
  process died while the tool ran). It is not run again silently: the step stops with a
  LangGraph interrupt of type `needs_reconciliation`, which `quorum show` explains, until a
  person says what happened: `done` (it took effect: record that and go on) or `retry`.

A tool that talks to a service reads `idempotency_key()` while it runs and sends it as that
service's idempotency key, so even a retried call is applied once by a service that honours
such keys.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Literal

from langgraph.config import get_config, get_store
from langgraph.types import interrupt

from quorum.errors import UsageError
from quorum.journal import thread_namespace

NAMESPACE = "quorum_effects"
RECONCILE = "needs_reconciliation"
"""The interrupt type a started effect without an outcome stops its thread with."""

Resolution = Literal["done", "retry"]
Outcome = tuple[str, Literal["success", "error"]]
"""What the agent sees: the tool message's content and status."""

_current_key: ContextVar[str | None] = ContextVar("quorum_idempotency_key", default=None)


def idempotency_key() -> str | None:
    """The idempotency key of the side-effecting tool call running now, if any."""
    return _current_key.get()


async def run_once(
    tool: str, args: dict[str, Any], call_id: str, run: Callable[[], Awaitable[Outcome]]
) -> Outcome:
    """Run a side-effecting tool call through the ledger (see the module docstring)."""
    try:
        config = get_config()
        store = get_store()
    except RuntimeError:
        store = None
    thread_id = config.get("configurable", {}).get("thread_id") if store else None
    if store is None or not thread_id:
        return await run()  # outside a durable run, there is nothing to remember it by
    step = config["configurable"].get("checkpoint_ns", "")
    namespace = thread_namespace(NAMESPACE, str(thread_id))
    key = f"{step}/{call_id}"
    digest = hashlib.sha256(f"{thread_id}\x00{key}".encode()).hexdigest()[:32]
    entry: dict[str, Any] = {
        "tool": tool,
        "args": args,
        "idempotency_key": f"quorum-{digest}",
        "state": "started",
        "started_at": time.time(),
    }
    found = await store.aget(namespace, key)
    if found is not None:
        recorded = found.value
        if recorded["state"] in ("completed", "failed"):
            return recorded["content"], recorded["status"]
        resolution = interrupt(
            {
                "type": RECONCILE,
                "tool": tool,
                "args": json.loads(json.dumps(args, default=str)),
                "idempotency_key": recorded["idempotency_key"],
                "started_at": recorded["started_at"],
                "question": f"{tool} started but its outcome was never recorded (the process "
                "stopped while it ran). Did it take effect?",
            }
        )
        if resolution == "done":
            content = json.dumps(
                {"note": f"{tool} took effect (confirmed by an operator; its result was lost)"}
            )
            await store.aput(
                namespace,
                key,
                {
                    **recorded,
                    "state": "completed",
                    "content": content,
                    "status": "success",
                    "resolved": "done",
                    "finished_at": time.time(),
                },
                index=False,
            )
            return content, "success"
        if resolution != "retry":
            raise UsageError(
                f"unknown resolution {resolution!r} for {tool}", hint="resolve with done or retry"
            )
        entry = {**recorded, "resolved": "retry", "started_at": time.time()}
    await store.aput(namespace, key, entry, index=False)
    token = _current_key.set(entry["idempotency_key"])
    try:
        content, status = await run()
    finally:
        _current_key.reset(token)
    await store.aput(
        namespace,
        key,
        {
            **entry,
            "state": "completed" if status == "success" else "failed",
            "content": content,
            "status": status,
            "finished_at": time.time(),
        },
        index=False,
    )
    return content, status
