"""The write side of the Python API: run a pattern on a durable thread, resume or fork it.

Every run is checkpointed (SQLite by default) under a thread id, with its call journal and
effect ledger in the same database. The pattern and the run's context are stored in the
checkpoint metadata, so `resume` continues a thread with exactly the settings it started
with. A run holds the thread's lease while it lives (`quorum.checkpoints.lease`): a second
run or resume of the same thread, from any process, stops at once with `ThreadBusy`, and
`list_threads` shows the thread as `running`.

    result = await quorum.run("debate", "Is Rust or Go better for a CLI?")
    result = await quorum.resume(result.thread_id)

Every checkpoint of a thread can start a fork: `resume(thread_id, checkpoint_id=...)` runs on
from that checkpoint as a new branch (LangGraph's time travel), which becomes the thread's
latest state; the earlier branch stays in the history. Model calls the fork makes are its own:
the journal keys a call by the task making it, and a fork's tasks start from a new checkpoint,
so the model is asked again there, while a fork that crashes and is resumed replays its own
calls. Tool calls are new calls in a fork too (the effect ledger keys them by their task):
an irreversible one waits for a person's approval again.
Only commands that run create the database. Reading threads (status, history, ledger,
listing) and deleting them is `quorum.threads`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from quorum import effects, models, telemetry, tools
from quorum.checkpoints import Persistence, shared_persistence
from quorum.context import QuorumContext
from quorum.effects import APPROVAL, RECONCILE, Decision, Resolution, check_decision
from quorum.errors import (
    UsageError,
    check_utf8,
)
from quorum.graphs import PATTERNS
from quorum.lifecycle import (
    OnEvent,
    drive,
    hold_thread,
    thread_config,
)
from quorum.settings import get_settings
from quorum.threads import (
    ThreadInfo,
    compile_pattern,
    find_checkpoint,
    stored_context,
    thread_info,
)


async def run(
    pattern: str,
    text: str,
    *,
    thread_id: str | None = None,
    context: QuorumContext | None = None,
    database: str | None = None,
    on_event: OnEvent | None = None,
    stream: bool = False,
) -> ThreadInfo:
    """Run `pattern` on `text` in a new thread and return the finished thread.

    `on_event` hears each agent start and finish; with `stream`, also each reply as it is
    written (`RunEvent` `wrote`: a few tokens at a time, or whole when the journal replays it).
    """
    if pattern not in PATTERNS:
        raise UsageError(
            f"unknown pattern {pattern!r}", hint=f"choose one of: {', '.join(PATTERNS)}"
        )
    check_input(text)
    thread_id = thread_id or new_thread_id()
    check_utf8(thread_id, "the thread id")
    context = context or QuorumContext()
    # A bad endpoint, key, model name or tracing setting fails here, before anything is saved.
    telemetry.tracer()
    await models.preflight(context)
    await tools.check_grants(context)
    async with shared_persistence(database) as kept, hold_thread(kept, thread_id) as lease:
        if await kept.saver.aget_tuple(thread_config(thread_id)) is not None:
            raise UsageError(
                f"thread {thread_id!r} already exists",
                hint=f"continue it with `quorum resume {thread_id}` or choose another id",
            )
        graph = compile_pattern(kept, pattern)
        await drive(
            graph,
            {"input": text},
            pattern,
            thread_id,
            context,
            on_event,
            lease.holder,
            stream=stream,
            new_thread=True,
        )
        return await thread_info(kept, thread_id, ignore_lease=True, pattern=pattern)


async def resume(
    thread_id: str,
    *,
    database: str | None = None,
    on_event: OnEvent | None = None,
    resolution: Resolution | None = None,
    approve: Decision | bool | Mapping[str, Decision | bool] | None = None,
    settings: dict[str, Any] | None = None,
    checkpoint_id: str | None = None,
    decided_by: str | None = None,
    via: str = "python",
    stream: bool = False,
) -> ThreadInfo:
    """Continue an interrupted, crashed, failed or waiting thread from its last checkpoint.

    `settings` change run settings for the rest of the run (a larger budget, say).
    A thread waiting for approval continues with `approve`: one decision for every waiting call
    (True, False, or a `Decision`), or a dict of them by tool call id. The effect ledger
    records who decided: `decided_by` (default: this process's OS user and host), and `via`
    which way in (the CLI says `cli`); with `QUORUM_APPROVERS` set, anyone not in it is
    refused and the question keeps waiting. A thread stopped at
    a side effect of unknown outcome continues with a `resolution`: "done" or "retry".
    With `checkpoint_id` (an id from `ThreadInfo.checkpoints`, or a unique prefix of one), the
    thread runs on from that earlier checkpoint as a fork instead, with its settings there
    changed by `settings`. `on_event` and `stream` are as in `run`.
    """
    existing = shared_persistence(database, create=False, thread_id=thread_id)
    async with existing as kept, hold_thread(kept, thread_id) as lease:
        info = await thread_info(kept, thread_id, ignore_lease=True)
        if checkpoint_id is not None:
            if resolution is not None or approve is not None:
                raise UsageError(
                    "a fork starts from a checkpoint: approve or resolve what it waits for after it"
                )
            await _fork(
                kept, info, checkpoint_id, settings or {}, on_event, lease.holder, stream=stream
            )
            return await thread_info(kept, thread_id, ignore_lease=True)
        if info.status == "completed":
            return info
        if approve is not None and await _decided_before(kept, info):
            approve = None
        if approve is not None:
            approve = _signed(approve, decided_by or effects.local_identity(), via)
        answers = _answers(info, resolution, approve)
        if info.waiting and not answers:
            return info  # still waiting for a person: nothing can run yet
        context = await stored_context(kept, thread_id, settings)
        graph = compile_pattern(kept, info.pattern)
        if info.status == "step_limit" and not await _more_steps(graph, info, context):
            return info  # no more steps given: it stays where it stopped
        telemetry.tracer()
        await models.preflight(context)
        await tools.check_grants(context)
        payload: Command[Any] | None = Command(resume=answers) if answers else None
        await drive(
            graph, payload, info.pattern, thread_id, context, on_event, lease.holder, stream=stream
        )
        return await thread_info(kept, thread_id, ignore_lease=True)


async def _decided_before(kept: Persistence, info: ThreadInfo) -> bool:
    """Whether a killed `approve` had recorded the decision it was asked to give.

    Before or after its call ran, the person's decision stands, and the thread goes on from
    there (to ask what became of the call, if it had started and its outcome is unknown).
    """
    if info.waiting:
        return False
    if info.answered:
        return True
    return info.status == "interrupted" and bool(
        await effects.decided_calls(kept.store, info.thread_id)
    )


async def _more_steps(
    graph: CompiledStateGraph[Any, QuorumContext, Any, Any],
    info: ThreadInfo,
    context: QuorumContext,
) -> bool:
    """Whether a thread that ended at its step limit gets more steps from `context`.

    If so, it is set running again, for the agent to take its turn.
    """
    if context.max_steps <= int(info.values.get("steps", 0)):
        return False
    await graph.aupdate_state(
        thread_config(info.thread_id), {"status": "running", "output": ""}, as_node="tool"
    )
    return True


async def _fork(
    kept: Persistence,
    info: ThreadInfo,
    checkpoint_id: str,
    settings: dict[str, Any],
    on_event: OnEvent | None,
    holder: str,
    *,
    stream: bool = False,
) -> None:
    """Run `info`'s thread on from one of its earlier checkpoints, as a new branch."""
    thread_id = info.thread_id
    found = await find_checkpoint(kept, thread_id, checkpoint_id)
    graph = compile_pattern(kept, info.pattern)
    snapshot = await graph.aget_state(found.config)
    if not snapshot.next:
        raise UsageError(
            f"checkpoint {found.config['configurable']['checkpoint_id']} is where thread "
            f"{thread_id!r} ended: nothing runs from it",
            hint=f"fork from an earlier one; `quorum show {thread_id} --history` lists them",
        )
    context = await stored_context(kept, thread_id, settings, dict(found.metadata or {}))
    await models.preflight(context)
    start = found.config
    await drive(
        graph, None, info.pattern, thread_id, context, on_event, holder, start=start, stream=stream
    )


def _signed(
    decisions: Decision | bool | Mapping[str, Decision | bool], by: str, via: str
) -> Decision | Mapping[str, Decision]:
    """The decisions with who made them and how; refused if `by` may not decide."""
    approvers = get_settings().approvers
    if approvers and by not in approvers:
        raise UsageError(
            f"{by} may not decide approvals here (approvers: {', '.join(approvers)})",
            hint="ask one of them, or add this identity to QUORUM_APPROVERS; the question "
            "keeps waiting",
        )

    def sign(decision: Decision | bool) -> Decision:
        return Decision(**{**check_decision(decision), "by": by, "via": via})

    if isinstance(decisions, Mapping) and "action" not in decisions:
        by_call: Mapping[str, Decision | bool] = decisions  # type: ignore[assignment]
        return {call: sign(decision) for call, decision in by_call.items()}
    return sign(decisions)  # type: ignore[arg-type]


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


def check_input(text: str) -> None:
    """Refuse input that cannot be a run's input, before anything is saved."""
    if not text.strip():
        raise UsageError(
            "the input is empty", hint="give the goal, topic, question or task to work on"
        )
    check_utf8(text, "the input")


def new_thread_id() -> str:
    """A fresh, short thread id."""
    return uuid.uuid4().hex[:12]


@asynccontextmanager
async def database(target: str | None = None) -> AsyncIterator[None]:
    """Hold the database open for the runs and resumes in the block (a loop, a service).

    Each `run` or `resume` otherwise opens the database and closes it when no other call of
    this event loop is using it: for SQLite two connections, a writer thread and a schema
    check (about 18 ms on a 2-core machine; 70 ms for PostgreSQL). Within the block they
    share one opened database, as concurrent calls always do; it is closed when the block
    ends.

        async with quorum.database("runs.db"):
            for goal in goals:
                await quorum.run("react", goal, database="runs.db")
    """
    async with shared_persistence(target):
        yield
