"""The Python API: run a pattern on a durable thread, resume it, list and inspect threads.

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
Only commands that run create the database: listing, showing and deleting threads read it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from quorum import effects, metering, models, telemetry, tools
from quorum.checkpoints import Persistence, list_thread_ids, shared_persistence
from quorum.checkpoints.lease import Lease
from quorum.context import QuorumContext
from quorum.effects import APPROVAL, RECONCILE, Decision, Resolution, check_decision
from quorum.errors import (
    NoDatabase,
    ThreadBusy,
    ThreadNotFound,
    UsageError,
    check_utf8,
)
from quorum.graphs import PATTERNS
from quorum.lifecycle import (
    OnEvent,
    Status,
    drive,
    hold_thread,
    status_of,
    thread_config,
    waiting_on,
)
from quorum.metering import Ledger
from quorum.settings import get_settings, redact
from quorum.state import Usage


@dataclass(frozen=True)
class HistoryEntry:
    """One checkpoint of a thread: the agents that run from it as step `step`."""

    step: int
    agents: list[str]
    """The next nodes: empty at the thread's end."""
    created_at: str
    error: str | None = None
    checkpoint_id: str = ""
    """What `resume(..., checkpoint_id=...)` forks from."""
    source: str = ""
    """How LangGraph wrote it: input, loop, update or fork."""


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
    """The steps of the thread's current branch, oldest first: checkpoints with agents to run."""
    checkpoints: list[HistoryEntry] = field(default_factory=list)
    """Every checkpoint of the current branch, oldest first (the end and the input too)."""
    waiting: list[dict[str, Any]] = field(default_factory=list)
    """What the thread waits for a person to decide: tool calls to approve, side effects of
    unknown outcome (each with its `type`, `tool`, `args`, `agent`, `call_id`, `question`)."""
    ledger: Ledger = field(default_factory=Ledger)
    """What its model calls spent, per agent and per run, with latencies and errors."""
    decisions: list[dict[str, Any]] = field(default_factory=list)
    """Approval decisions (with the history): tool, agent, action, by, via, at (Unix time)."""
    answered: list[str] = field(default_factory=list)
    """Tool calls whose approval a person gave before the step was stopped (a kill): the
    decision is recorded, so a resume goes on without asking it again."""


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
        graph = _compile(kept, pattern)
        await drive(
            graph,
            {"input": text},
            pattern,
            thread_id,
            context,
            on_event,
            lease.holder,
            stream=stream,
        )
        return await _thread_info(kept, thread_id, ignore_lease=True)


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
        info = await _thread_info(kept, thread_id, ignore_lease=True)
        if checkpoint_id is not None:
            if resolution is not None or approve is not None:
                raise UsageError(
                    "a fork starts from a checkpoint: approve or resolve what it waits for after it"
                )
            await _fork(
                kept, info, checkpoint_id, settings or {}, on_event, lease.holder, stream=stream
            )
            return await _thread_info(kept, thread_id, ignore_lease=True)
        if info.status == "completed":
            return info
        if (
            approve is not None
            and not info.waiting
            and (
                info.answered
                or (
                    info.status == "interrupted"
                    and await effects.decided_calls(kept.store, thread_id)
                )
            )
        ):
            # `approve` was killed after the approval was recorded (before or after its call
            # ran): the person's decision stands, and the thread goes on from there (to ask
            # what became of the call, if it had started and its outcome is unknown).
            approve = None
        if approve is not None:
            approve = _signed(approve, decided_by or effects.local_identity(), via)
        answers = _answers(info, resolution, approve)
        if info.waiting and not answers:
            return info  # still waiting for a person: nothing can run yet
        context = _stored_context(await _metadata(kept, thread_id), settings)
        graph = _compile(kept, info.pattern)
        if info.status == "step_limit":
            if context.max_steps <= int(info.values.get("steps", 0)):
                return info  # no more steps given: it stays where it stopped
            # The run ended at its limit; with a higher one the agent takes its turn again.
            await graph.aupdate_state(
                thread_config(thread_id), {"status": "running", "output": ""}, as_node="tool"
            )
        telemetry.tracer()
        await models.preflight(context)
        await tools.check_grants(context)
        payload: Command[Any] | None = Command(resume=answers) if answers else None
        await drive(
            graph, payload, info.pattern, thread_id, context, on_event, lease.holder, stream=stream
        )
        return await _thread_info(kept, thread_id, ignore_lease=True)


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
    found = await _checkpoint(kept, thread_id, checkpoint_id)
    graph = _compile(kept, info.pattern)
    snapshot = await graph.aget_state(found.config)
    if not snapshot.next:
        raise UsageError(
            f"checkpoint {found.config['configurable']['checkpoint_id']} is where thread "
            f"{thread_id!r} ended: nothing runs from it",
            hint=f"fork from an earlier one; `quorum show {thread_id} --history` lists them",
        )
    context = _stored_context(found.metadata or {}, settings)
    await models.preflight(context)
    start = found.config
    await drive(
        graph, None, info.pattern, thread_id, context, on_event, holder, start=start, stream=stream
    )


async def _checkpoint(kept: Persistence, thread_id: str, wanted: str) -> Any:
    """The thread's top-level checkpoint whose id is `wanted` or starts with it."""
    top: RunnableConfig = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    ids = [c.config["configurable"]["checkpoint_id"] async for c in kept.saver.alist(top)]
    matches = [i for i in ids if i == wanted] or [i for i in ids if i.startswith(wanted)]
    if len(matches) != 1:
        problem = "matches several checkpoints" if matches else "is no checkpoint"
        raise UsageError(
            f"{wanted!r} {problem} of thread {thread_id!r}",
            hint=f"`quorum show {thread_id} --history` lists its checkpoint ids",
        )
    top["configurable"]["checkpoint_id"] = matches[0]
    return await kept.saver.aget_tuple(top)


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


async def run_context(
    thread_id: str, *, database: str | None = None, settings: dict[str, Any] | None = None
) -> QuorumContext:
    """The run settings a resume of the thread runs with: its own, changed by `settings`."""
    async with shared_persistence(database, read_only=True, thread_id=thread_id) as kept:
        return _stored_context(await _metadata(kept, thread_id), settings)


def _stored_context(metadata: dict[str, Any], settings: dict[str, Any] | None) -> QuorumContext:
    stored = json.loads(metadata.get("quorum_context", "{}"))
    return QuorumContext.from_dict({**stored, **(settings or {})})


async def get_thread(thread_id: str, *, database: str | None = None) -> ThreadInfo:
    """The state, status, step history and checkpoints of one thread."""
    async with shared_persistence(database, read_only=True, thread_id=thread_id) as kept:
        return await _thread_info(kept, thread_id, with_history=True)


async def ledger(thread_id: str, *, database: str | None = None) -> Ledger:
    """What a thread's model calls spent: in total, per agent and per run.

    Calls, tokens, cost, latency (total, p50 and p95 per call), attempts and errors, from the
    thread's call journal: each call counted once, across crashes and resumes.
    """
    async with shared_persistence(database, read_only=True, thread_id=thread_id) as kept:
        await _metadata(kept, thread_id)  # ThreadNotFound if there is none
        return await metering.journal_ledger(kept.store, thread_id)


async def list_threads(*, database: str | None = None) -> list[ThreadInfo]:
    """Every Quorum thread in the store, most recently updated first.

    Threads of other graphs that share the store are left out. No database yet: no threads
    (and none is created).
    """
    try:
        async with shared_persistence(database, read_only=True) as kept:
            return await _list_threads(kept)
    except NoDatabase:
        return []


async def _list_threads(kept: Persistence) -> list[ThreadInfo]:
    infos = []
    graphs = {p: _compile(kept, p) for p in PATTERNS}
    leases = await kept.leases.live()
    for thread_id in await list_thread_ids(kept.saver):
        try:
            info = await _thread_info(kept, thread_id, graphs=graphs, lease=leases.get(thread_id))
        except ThreadNotFound:
            continue  # not made by a Quorum pattern
        infos.append(info)
    return sorted(infos, key=lambda info: info.updated_at, reverse=True)


async def delete_thread(thread_id: str, *, database: str | None = None) -> None:
    """Delete a thread with its journal and effect ledger (refused while it runs).

    What a thread deleted elsewhere left behind (Studio deletes only the checkpoints) goes too.
    """
    existing = shared_persistence(database, create=False, thread_id=thread_id)
    async with existing as kept, hold_thread(kept, thread_id):
        checkpointed = await kept.saver.aget_tuple(thread_config(thread_id)) is not None
        records = await kept.delete_thread(thread_id)
        if not checkpointed and not records:
            await _metadata(kept, thread_id)  # raises ThreadNotFound


async def prune_threads(
    *,
    older_than: timedelta | None = None,
    keep: int | None = None,
    database: str | None = None,
    dry_run: bool = False,
    among: Collection[str] | None = None,
) -> list[ThreadInfo]:
    """Delete old threads with their journals, effect ledgers and leases; return them.

    A thread goes when it was last updated more than `older_than` ago and is not among the
    `keep` most recently updated (either alone is enough). Threads a run holds are kept.
    `dry_run` only says which would go; `among` limits deletion to those threads (the ones a
    person agreed to after a dry run).
    """
    if older_than is None and keep is None:
        raise UsageError("say which threads to prune", hint="give older_than, keep or both")
    if keep is not None and keep < 0:
        raise UsageError(f"keep must be 0 or more, not {keep}")
    try:
        async with shared_persistence(database, create=False) as kept:
            infos = await _list_threads(kept)
            cutoff = datetime.now(UTC) - older_than if older_than is not None else None
            doomed = [
                info
                for rank, info in enumerate(infos)
                if (keep is None or rank >= keep)
                and (cutoff is None or datetime.fromisoformat(info.updated_at) < cutoff)
                and info.status != "running"
                and (among is None or info.thread_id in among)
            ]
            if dry_run:
                return doomed
            deleted = []
            for info in doomed:
                try:
                    async with hold_thread(kept, info.thread_id):
                        await kept.delete_thread(info.thread_id)
                except ThreadBusy:
                    continue  # a run started it since it was listed: it is not old any more
                deleted.append(info)
            return deleted
    except NoDatabase:
        return []


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


def _compile(kept: Persistence, pattern: str) -> CompiledStateGraph[Any, QuorumContext, Any, Any]:
    return PATTERNS[pattern].compile(checkpointer=kept.saver, store=kept.store, name=pattern)


async def _metadata(kept: Persistence, thread_id: str) -> dict[str, Any]:
    found = await kept.saver.aget_tuple(thread_config(thread_id))
    if found is None:
        raise ThreadNotFound(
            f"no thread {thread_id!r} in the checkpoint store",
            hint="list threads with `quorum threads`",
        )
    return dict(found.metadata or {})


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
    snapshot = await graph.aget_state(thread_config(thread_id))
    if lease is None and not ignore_lease and graphs is None:
        lease = await kept.leases.get(thread_id)
    decided = await effects.decided_calls(kept.store, thread_id) if snapshot.interrupts else set()
    status, error = status_of(snapshot, None if ignore_lease else lease, decided)
    checkpoints = await _branch(graph, thread_id) if with_history else []
    values = dict(snapshot.values)
    # The journal knows every answered call, also those of a step that has not finished
    # (a budget stopped it, or the process died): the checkpoint's usage does not yet.
    ledger = await metering.journal_ledger(kept.store, thread_id)
    usage = ledger.usage() or values.get("usage", {})
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
        history=[entry for entry in checkpoints if entry.agents],
        checkpoints=checkpoints,
        waiting=waiting_on(snapshot, decided),
        decisions=await effects.decisions(kept.store, thread_id) if with_history else [],
        answered=sorted(
            call
            for i in snapshot.interrupts
            if isinstance(i.value, dict)
            and i.value.get("type") == APPROVAL
            and i.value.get("ledger_key") in decided
            and (call := i.value.get("call_id"))
        ),
        ledger=ledger,
    )


async def _branch(
    graph: CompiledStateGraph[Any, QuorumContext, Any, Any], thread_id: str
) -> list[HistoryEntry]:
    """The checkpoints of the thread's current branch, oldest first.

    A thread with forks has several branches; its history is the one that leads to its latest
    checkpoint (the others stay in the store, and their ids can still be forked from).
    """
    pasts = [past async for past in graph.aget_state_history(thread_config(thread_id))]
    by_id = {past.config["configurable"]["checkpoint_id"]: past for past in pasts}
    branch: list[HistoryEntry] = []
    current = pasts[0] if pasts else None
    while current is not None:
        metadata = current.metadata or {}
        branch.append(
            HistoryEntry(
                step=int(metadata.get("step", -1)) + 1,
                agents=[t.name for t in current.tasks if t.name != "__start__"],
                created_at=current.created_at or "",
                error=next((redact(str(t.error)) for t in current.tasks if t.error), None),
                checkpoint_id=current.config["configurable"]["checkpoint_id"],
                source=str(metadata.get("source", "")),
            )
        )
        parent = (current.parent_config or {}).get("configurable", {}).get("checkpoint_id")
        current = by_id.get(parent) if parent else None
    branch.reverse()
    return branch
