"""The Python API: run a pattern on a durable thread, resume it, list and inspect threads.

Every run is checkpointed (SQLite by default) under a thread id, with its call journal and
effect ledger in the same database. The pattern and the run's context are stored in the
checkpoint metadata, so `resume` continues a thread with exactly the settings it started
with. A run holds the thread's lease while it lives (`quorum.checkpoints.lease`): a second
run or resume of the same thread, from any process, stops at once with `ThreadBusy`, and
`list_threads` shows the thread as `running`.

    result = await quorum.run("debate", "Is Rust or Go better for a CLI?")
    result = await quorum.resume(result.thread_id)
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, StateSnapshot

from quorum import metering, models
from quorum.checkpoints import Persistence, list_thread_ids, open_persistence
from quorum.checkpoints.lease import Lease, hold
from quorum.context import QuorumContext
from quorum.effects import APPROVAL, RECONCILE, Decision, Resolution, check_decision
from quorum.errors import BudgetExceeded, QuorumError, RunFailed, ThreadNotFound, UsageError
from quorum.graphs import PATTERNS
from quorum.settings import get_settings, redact
from quorum.state import Usage

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


@dataclass(frozen=True)
class RunEvent:
    """Progress of a run: an agent started or finished."""

    kind: Literal["started", "finished"]
    agent: str
    usage: dict[str, Usage] = field(default_factory=dict)
    """Usage the finished agent reported (empty on start)."""
    error: str | None = None
    """Why the agent failed, if it did."""


@dataclass(frozen=True)
class HistoryEntry:
    """One step of a thread: which agents ran from which checkpoint."""

    step: int
    agents: list[str]
    created_at: str
    error: str | None = None


@dataclass(frozen=True)
class ThreadInfo:
    """What the checkpoint store knows of a thread."""

    thread_id: str
    pattern: str
    status: Status
    updated_at: str
    input: str
    output: str
    usage: dict[str, Usage]
    error: str | None
    values: dict[str, Any]
    history: list[HistoryEntry] = field(default_factory=list)
    waiting: list[dict[str, Any]] = field(default_factory=list)
    """What the thread waits for a person to decide: tool calls to approve, side effects of
    unknown outcome (each with its `type`, `tool`, `args`, `agent`, `call_id`, `question`)."""


OnEvent = Callable[[RunEvent], None]


async def run(
    pattern: str,
    text: str,
    *,
    thread_id: str | None = None,
    context: QuorumContext | None = None,
    database: str | None = None,
    on_event: OnEvent | None = None,
) -> ThreadInfo:
    """Run `pattern` on `text` in a new thread and return the finished thread."""
    if pattern not in PATTERNS:
        raise UsageError(
            f"unknown pattern {pattern!r}", hint=f"choose one of: {', '.join(PATTERNS)}"
        )
    check_input(text)
    thread_id = thread_id or new_thread_id()
    context = context or QuorumContext()
    # A bad endpoint, key or model name fails here, before anything is saved.
    await models.preflight(context)
    async with open_persistence(database) as kept, _lease(kept, thread_id):
        if await kept.saver.aget_tuple(_config(thread_id)) is not None:
            raise UsageError(
                f"thread {thread_id!r} already exists",
                hint=f"continue it with `quorum resume {thread_id}` or choose another id",
            )
        graph = _compile(kept, pattern)
        await _drive(graph, {"input": text}, pattern, thread_id, context, on_event)
        return await _thread_info(kept, thread_id, ignore_lease=True)


async def resume(
    thread_id: str,
    *,
    database: str | None = None,
    on_event: OnEvent | None = None,
    resolution: Resolution | None = None,
    approve: Decision | bool | Mapping[str, Decision | bool] | None = None,
    settings: dict[str, Any] | None = None,
) -> ThreadInfo:
    """Continue an interrupted, crashed, failed or waiting thread from its last checkpoint.

    `settings` change run settings for the rest of the run (a larger budget, say).
    A thread waiting for approval continues with `approve`: one decision for every waiting call
    (True, False, or a `Decision`), or a dict of them by tool call id. A thread stopped at
    a side effect of unknown outcome continues with a `resolution`: "done" or "retry".
    """
    async with open_persistence(database) as kept, _lease(kept, thread_id):
        info = await _thread_info(kept, thread_id, ignore_lease=True)
        if info.status == "completed":
            return info
        answers = _answers(info, resolution, approve)
        if info.waiting and not answers:
            return info  # still waiting for a person: nothing can run yet
        metadata = await _metadata(kept, thread_id)
        stored = json.loads(metadata.get("quorum_context", "{}"))
        context = QuorumContext.from_dict({**stored, **(settings or {})})
        graph = _compile(kept, info.pattern)
        if info.status == "step_limit":
            if context.max_steps <= int(info.values.get("steps", 0)):
                return info  # no more steps given: it stays where it stopped
            # The run ended at its limit; with a higher one the agent takes its turn again.
            await graph.aupdate_state(
                _config(thread_id), {"status": "running", "output": ""}, as_node="tool"
            )
        await models.preflight(context)
        payload: Command[Any] | None = Command(resume=answers) if answers else None
        await _drive(graph, payload, info.pattern, thread_id, context, on_event)
        return await _thread_info(kept, thread_id, ignore_lease=True)


def _answers(
    info: ThreadInfo,
    resolution: Resolution | None,
    decisions: Decision | bool | Mapping[str, Decision | bool] | None,
) -> dict[str, Any]:
    """The resume value for each waiting interrupt, by interrupt id."""
    thread_id = info.thread_id
    approvals = [w for w in info.waiting if w["type"] == APPROVAL]
    unknown = [w for w in info.waiting if w["type"] == RECONCILE]
    if resolution is not None and not unknown:
        raise UsageError(
            f"thread {thread_id!r} has no side effect of unknown outcome (it is {info.status})",
            hint=f"continue it with `quorum resume {thread_id}`",
        )
    if decisions is not None and not approvals:
        raise UsageError(
            f"thread {thread_id!r} waits for no approval (it is {info.status})",
            hint=f"continue it with `quorum resume {thread_id}`",
        )
    answers: dict[str, Any] = (
        {w["interrupt_id"]: resolution for w in unknown} if resolution is not None else {}
    )
    if isinstance(decisions, Mapping) and "action" not in decisions:
        by_call: dict[str, Any] = dict(decisions)
        strays = set(by_call) - {w["call_id"] for w in approvals}
        if strays:
            raise UsageError(
                f"no approval waits for call {', '.join(sorted(strays))}",
                hint=f"the waiting calls: {', '.join(w['call_id'] for w in approvals)}",
            )
        answers |= {
            w["interrupt_id"]: check_decision(by_call[w["call_id"]])
            for w in approvals
            if w["call_id"] in by_call
        }
    elif decisions is not None:
        answers |= {w["interrupt_id"]: check_decision(decisions) for w in approvals}
    return answers


async def get_thread(thread_id: str, *, database: str | None = None) -> ThreadInfo:
    """The state, status and step history of one thread."""
    async with open_persistence(database) as kept:
        return await _thread_info(kept, thread_id, with_history=True)


async def list_threads(*, database: str | None = None) -> list[ThreadInfo]:
    """Every Quorum thread in the store, most recently updated first.

    Threads of other graphs that share the store are left out.
    """
    infos = []
    async with open_persistence(database) as kept:
        graphs = {p: _compile(kept, p) for p in PATTERNS}
        leases = await kept.leases.live()
        for thread_id in await list_thread_ids(kept.saver):
            try:
                info = await _thread_info(
                    kept, thread_id, graphs=graphs, lease=leases.get(thread_id)
                )
            except ThreadNotFound:
                continue  # not made by a Quorum pattern
            infos.append(info)
    return sorted(infos, key=lambda info: info.updated_at, reverse=True)


async def delete_thread(thread_id: str, *, database: str | None = None) -> None:
    """Delete a thread with its journal and effect ledger (refused while it runs)."""
    async with open_persistence(database) as kept, _lease(kept, thread_id):
        await _metadata(kept, thread_id)  # ThreadNotFound if there is none
        await kept.delete_thread(thread_id)


def check_input(text: str) -> None:
    """Refuse input that cannot be a run's input, before anything is saved."""
    if not text.strip():
        raise UsageError(
            "the input is empty", hint="give the goal, topic, question or task to work on"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise UsageError(
            f"the input is not valid UTF-8 text (undecodable bytes at character {error.start})",
            hint="pass UTF-8 text; convert other encodings first, e.g. with iconv",
        ) from None


def new_thread_id() -> str:
    """A fresh, short thread id."""
    return uuid.uuid4().hex[:12]


def _config(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id}}


def _compile(kept: Persistence, pattern: str) -> CompiledStateGraph[Any, QuorumContext, Any, Any]:
    return PATTERNS[pattern].compile(checkpointer=kept.saver, store=kept.store, name=pattern)


def _lease(kept: Persistence, thread_id: str) -> Any:
    return hold(kept.leases, thread_id, get_settings().lease_seconds)


async def _drive(
    graph: CompiledStateGraph[Any, QuorumContext, Any, Any],
    payload: dict[str, Any] | Command[Any] | None,
    pattern: str,
    thread_id: str,
    context: QuorumContext,
    on_event: OnEvent | None,
) -> None:
    config: RunnableConfig = {
        **_config(thread_id),
        "run_name": f"quorum.{pattern}",
        "tags": ["quorum", pattern],
        # Metadata is stored with every checkpoint; LangGraph keeps only scalar values.
        "metadata": {
            "quorum_pattern": pattern,
            "quorum_context": json.dumps(context.to_dict()),
            # Budgets are metered per run: a new id starts a meter seeded from the journal.
            "run_id": str(uuid.uuid4()),
        },
    }
    labels: dict[str, str] = {}
    try:
        # durability="sync": a step's checkpoint is on disk before the next starts.
        async for event in graph.astream(
            payload, config, context=context, stream_mode="tasks", durability="sync"
        ):
            if on_event is not None:
                on_event(_run_event(event, labels))
    except BudgetExceeded:
        return  # the thread stops as `budget_exceeded`, resumable with a larger budget
    except Exception as error:
        state = await graph.aget_state(config)
        failed = next((t.name for t in state.tasks if t.error), None) or "unknown"
        hint = error.hint if isinstance(error, QuorumError) else ""
        reason = error.message if isinstance(error, QuorumError) else f"{error!r}"
        raise RunFailed(
            redact(f"{pattern} run {thread_id} stopped: agent '{failed}' failed: {reason}"),
            agent=failed,
            thread_id=thread_id,
            hint=(hint + "; then " if hint else "fix the cause, then ")
            + f"continue with `quorum resume {thread_id}`",
        ) from error
    finally:
        metering.forget(thread_id)


def _run_event(event: dict[str, Any], labels: dict[str, str]) -> RunEvent:
    if "result" not in event:
        task = event.get("input")
        label = event["name"]
        # A worker sent one step of a plan is named by its agent and step, so parallel
        # workers can be told apart.
        if isinstance(task, dict) and {"step_id", "worker"} <= task.keys():
            label = f"{task['worker']} ({task['step_id']})"
        if isinstance(task, dict) and {"call", "tools"} <= task.keys():
            label = f"tool {task['call']['name']}"
        labels[event["id"]] = label
        return RunEvent("started", labels[event["id"]])
    result = event.get("result") or {}
    usage = result.get("usage", {}) if isinstance(result, dict) else {}
    error = event.get("error")
    agent = labels.pop(event["id"], event["name"])
    return RunEvent("finished", agent, usage, str(error) if error else None)


async def _metadata(kept: Persistence, thread_id: str) -> dict[str, Any]:
    found = await kept.saver.aget_tuple(_config(thread_id))
    if found is None:
        raise ThreadNotFound(
            f"no thread {thread_id!r} in the checkpoint store",
            hint="list threads with `quorum threads`",
        )
    return dict(found.metadata or {})


def _waiting(snapshot: StateSnapshot) -> list[dict[str, Any]]:
    return [
        {**interrupt.value, "interrupt_id": interrupt.id}
        for interrupt in snapshot.interrupts
        if isinstance(interrupt.value, dict)
        and interrupt.value.get("type") in (RECONCILE, APPROVAL)
    ]


def _status(snapshot: StateSnapshot, lease: Lease | None) -> tuple[Status, str | None]:
    error = next((t.error for t in snapshot.tasks if t.error), None)
    if error is not None:
        if isinstance(error, BudgetExceeded) or str(error).startswith("BudgetExceeded("):
            # Stored as the exception's repr: show its message.
            message = re.sub(r"^BudgetExceeded\((['\"])(.*)\1\)$", r"\2", str(error))
            return "budget_exceeded", redact(message)
        return "failed", redact(str(error))
    waiting = {w["type"] for w in _waiting(snapshot)}
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


async def _thread_info(
    kept: Persistence,
    thread_id: str,
    *,
    with_history: bool = False,
    graphs: dict[str, CompiledStateGraph[Any, QuorumContext, Any, Any]] | None = None,
    lease: Lease | None = None,
    ignore_lease: bool = False,
) -> ThreadInfo:
    metadata = await _metadata(kept, thread_id)
    # Runs started from Studio (`langgraph dev`) share the store and carry the graph's id.
    pattern = metadata.get("quorum_pattern") or metadata.get("graph_id", "")
    if pattern not in PATTERNS:
        raise ThreadNotFound(
            f"thread {thread_id!r} was not made by a Quorum pattern (pattern {pattern!r})",
            hint="list Quorum threads with `quorum threads`",
        )
    graph = (graphs or {}).get(pattern) or _compile(kept, pattern)
    snapshot = await graph.aget_state(_config(thread_id))
    if lease is None and not ignore_lease and graphs is None:
        lease = await kept.leases.get(thread_id)
    status, error = _status(snapshot, None if ignore_lease else lease)
    history: list[HistoryEntry] = []
    if with_history:
        async for past in graph.aget_state_history(_config(thread_id)):
            agents = [t.name for t in past.tasks if t.name != "__start__"]
            if agents:
                history.append(
                    HistoryEntry(
                        step=int((past.metadata or {}).get("step", -1)) + 1,
                        agents=agents,
                        created_at=past.created_at or "",
                        error=next((redact(str(t.error)) for t in past.tasks if t.error), None),
                    )
                )
        history.reverse()
    values = dict(snapshot.values)
    # The journal knows every answered call, also those of a step that has not finished
    # (a budget stopped it, or the process died): the checkpoint's usage does not yet.
    usage = await metering.journal_usage(kept.store, thread_id) or values.get("usage", {})
    return ThreadInfo(
        thread_id=thread_id,
        pattern=pattern,
        status=status,
        updated_at=snapshot.created_at or datetime.min.isoformat(),
        input=values.get("input", ""),
        output=values.get("output", ""),
        usage=usage,
        error=error,
        values=values,
        history=history,
        waiting=_waiting(snapshot),
    )
