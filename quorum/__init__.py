"""Quorum: durable, observable multi-agent patterns on LangGraph.

The four patterns (orchestrator, pipeline, debate, react) are compiled StateGraphs in
`quorum.graphs`; this package's top level is the Python API that runs them on durable
threads:

    import quorum
    result = await quorum.run("orchestrator", "Compare SQLite and PostgreSQL for a CLI tool")
    print(result.output, result.thread_id)
    spent = await quorum.ledger(result.thread_id)  # calls, tokens, cost, latency per agent

    def show(event: quorum.RunEvent) -> None:  # the answer as it is written
        if event.kind == "wrote" and event.answer:
            print(event.text, end="", flush=True)

    await quorum.run("pipeline", "Solar power", on_event=show, stream=True)
    plan = await quorum.preview(thread_id)  # what a resume would do, run nothing

To compile a pattern's `builder` with your own checkpointer, give it Quorum's serializer
(`serializer()`): it revives Quorum's state types, and nothing else, without warnings.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from quorum.errors import QuorumError, RunFailed, ThreadBusy

if TYPE_CHECKING:
    from quorum.answers import SaidOnce
    from quorum.checkpoints.serde import strict_serializer as serializer
    from quorum.context import QuorumContext
    from quorum.dry_run import Preview, preview
    from quorum.effects import Decision
    from quorum.lifecycle import RunEvent
    from quorum.metering import Ledger, LedgerRow
    from quorum.runner import check_input, database, new_thread_id, resume, run
    from quorum.threads import (
        ThreadInfo,
        delete_thread,
        get_thread,
        ledger,
        list_threads,
        prune_threads,
    )

# The rest is imported when first used (PEP 562): LangGraph, LangChain and openai take seconds
# to import, and `quorum.cli` must be able to catch a signal before they are loaded.
_LAZY = {
    "serializer": ("quorum.checkpoints.serde", "strict_serializer"),
    "QuorumContext": ("quorum.context", "QuorumContext"),
    "Decision": ("quorum.effects", "Decision"),
    "SaidOnce": ("quorum.answers", "SaidOnce"),
    "Ledger": ("quorum.metering", "Ledger"),
    "LedgerRow": ("quorum.metering", "LedgerRow"),
    "RunEvent": ("quorum.lifecycle", "RunEvent"),
    "Preview": ("quorum.dry_run", "Preview"),
    "preview": ("quorum.dry_run", "preview"),
    "run": ("quorum.runner", "run"),
    "resume": ("quorum.runner", "resume"),
    "check_input": ("quorum.runner", "check_input"),
    "database": ("quorum.runner", "database"),
    "new_thread_id": ("quorum.runner", "new_thread_id"),
    **{
        name: ("quorum.threads", name)
        for name in (
            "ThreadInfo",
            "delete_thread",
            "get_thread",
            "ledger",
            "list_threads",
            "prune_threads",
        )
    },
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'quorum' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


__all__ = [
    "Decision",
    "Ledger",
    "LedgerRow",
    "Preview",
    "QuorumContext",
    "QuorumError",
    "RunEvent",
    "RunFailed",
    "SaidOnce",
    "ThreadBusy",
    "ThreadInfo",
    "check_input",
    "database",
    "delete_thread",
    "get_thread",
    "ledger",
    "list_threads",
    "new_thread_id",
    "preview",
    "prune_threads",
    "resume",
    "run",
    "serializer",
]
