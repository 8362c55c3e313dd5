"""How a thread stands, read from its checkpoint: its status and what it waits on.

The same reading puts a run's outcome on its span.

One reading of a thread's state for every reader: `quorum show` and the thread listing, the
resume preview, the eval, the run lifecycle's error mapping, and the span of a run, whether
the command line, Python or the LangGraph server started it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Set
from typing import Any, Literal, Protocol, cast

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import StateSnapshot

from quorum import metering, telemetry
from quorum.context import QuorumContext
from quorum.effects import APPROVAL, RECONCILE, Question
from quorum.errors import BudgetExceeded
from quorum.settings import redact


class Held(Protocol):
    """A thread's lease as read (`quorum.checkpoints.lease.Lease`)."""

    @property
    def live(self) -> bool:
        """Whether a run holds it now."""
        ...


Status = Literal[
    "completed",
    "interrupted",
    "failed",
    "running",
    "needs_reconciliation",
    "waiting_approval",
    "budget_exceeded",
    "step_limit",
]
"""How a thread stands. `completed`: the graph reached its end. `step_limit`: it ended at its
step limit without an answer. `budget_exceeded`: a budget ran out (resume with a larger one).
`waiting_approval`: an irreversible tool call waits for a person. `needs_reconciliation`: a
side effect started and its outcome is unknown. `failed`: an agent raised (fix, then resume).
`interrupted`: stopped or crashed (resume). `running`: a run holds the thread's lease."""


def waiting_on(snapshot: StateSnapshot, decided: Set[str] = frozenset()) -> list[Question]:
    """The questions the thread waits on; approvals whose ledger keys are `decided` are not.

    A step killed after its approval was answered (and recorded in the effect ledger) still
    shows that question in its checkpoint: it waits for nobody, and answering it again
    would hand its answer to the step's next question.
    """
    return [
        cast(Question, {**interrupt.value, "interrupt_id": interrupt.id})
        for interrupt in snapshot.interrupts
        if isinstance(interrupt.value, dict)
        and interrupt.value.get("type") in (RECONCILE, APPROVAL)
        and not (
            interrupt.value["type"] == APPROVAL and interrupt.value.get("ledger_key") in decided
        )
    ]


def cancelled(error: Exception | str) -> bool:
    """Whether a task's stored error is a cancellation (kept as the exception or its repr)."""
    return isinstance(error, asyncio.CancelledError) or str(error).startswith("CancelledError(")


def _budget(error: Exception | str) -> bool:
    """Whether a task's stored error is a budget stop (kept as the exception or its repr)."""
    return isinstance(error, BudgetExceeded) or str(error).startswith("BudgetExceeded(")


def status_of(
    snapshot: StateSnapshot, lease: Held | None, decided: Set[str] = frozenset()
) -> tuple[Status, str | None]:
    """How the thread at `snapshot` stands, and the error that stopped it, if one did.

    `lease` is the thread's lease as read (a live one makes it `running`); approvals whose
    ledger keys are `decided` wait for nobody.
    """
    # A task that was cancelled did not fail: a sibling's error or a stop (Ctrl-C, SIGTERM)
    # cancelled it. The thread stands as that error, or as interrupted.
    errors = [t.error for t in snapshot.tasks if t.error and not cancelled(t.error)]
    error = next((e for e in errors if _budget(e)), errors[0] if errors else None)
    if error is not None:
        if _budget(error):
            # Stored as the exception's repr: show its message.
            message = re.sub(r"^BudgetExceeded\((['\"])(.*)\1\)$", r"\2", str(error))
            return "budget_exceeded", redact(message)
        return "failed", redact(str(error))
    waiting = {w["type"] for w in waiting_on(snapshot, decided)}
    if RECONCILE in waiting:
        return "needs_reconciliation", None
    if APPROVAL in waiting:
        return "waiting_approval", None
    if lease is not None and lease.live:
        return "running", None
    # Completed means the graph ran to its end: a checkpoint the run loop wrote with nothing
    # left to do. A thread whose only checkpoint is its input never started.
    source = (snapshot.metadata or {}).get("source")
    if not snapshot.next and not snapshot.tasks and source == "loop":
        if snapshot.values.get("status") == "step_limit":
            return "step_limit", None
        return "completed", None
    return "interrupted", None


async def trace_outcome(
    graph: CompiledStateGraph[Any, QuorumContext, Any, Any], config: RunnableConfig, span: Any
) -> None:
    """Put how the run stands, and what the thread has spent, on its span (if traced)."""
    if span is None:
        return
    snapshot = await graph.aget_state(config)
    status, _ = status_of(snapshot, None)
    span.set_attribute("quorum.status", status)
    if graph.store is not None:
        thread_id = str(config["configurable"]["thread_id"])
        ledger = await metering.journal_ledger(graph.store, thread_id)
        telemetry.ended_step(span, ledger.usage())
