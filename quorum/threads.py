"""The read side of threads: status, history, ledger, settings, listing, deletion, pruning.

Everything here only reads a thread (its database opened read-only: a missing database is
not created), except `delete_thread` and `prune_threads`, which hold a thread's lease while
they delete it. The write side, running and resuming, is `quorum.runner`; both share the
helpers at the end (the thread's latest metadata, its pattern's graph, a checkpoint by id).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from weakref import WeakKeyDictionary

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from quorum import effects, metering, run_settings
from quorum.checkpoints import Persistence, list_thread_ids, shared_persistence
from quorum.checkpoints.lease import Lease
from quorum.context import QuorumContext
from quorum.effects import APPROVAL, Question
from quorum.errors import NoDatabase, ThreadBusy, ThreadNotFound, UsageError
from quorum.graphs import PATTERNS
from quorum.graphs.pattern import PatternGraph
from quorum.lifecycle import hold_thread, thread_config
from quorum.metering import Ledger
from quorum.outcome import Status, status_of, waiting_on
from quorum.settings import redact
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
    waiting: list[Question] = field(default_factory=list)
    """What the thread waits for a person to decide: tool calls to approve, side effects of
    unknown outcome (each with its `type`, `tool`, `args`, `agent`, `call_id`, `question`)."""
    ledger: Ledger = field(default_factory=Ledger)
    """What its model calls spent, per agent and per run, with latencies and errors."""
    decisions: list[dict[str, Any]] = field(default_factory=list)
    """Approval decisions (with the history): tool, agent, action, by, via, at (Unix time)."""
    answered: list[str] = field(default_factory=list)
    """Tool calls whose approval a person gave before the step was stopped (a kill): the
    decision is recorded, so a resume goes on without asking it again."""


async def run_context(
    thread_id: str, *, database: str | None = None, settings: dict[str, Any] | None = None
) -> QuorumContext:
    """The run settings a resume of the thread runs with: its own, changed by `settings`."""
    async with shared_persistence(database, read_only=True, thread_id=thread_id) as kept:
        return await stored_context(kept, thread_id, settings)


async def stored_context(
    kept: Persistence,
    thread_id: str,
    settings: dict[str, Any] | None,
    metadata: dict[str, Any] | None = None,
) -> QuorumContext:
    """The settings of the run that wrote a checkpoint, changed by `settings`.

    The checkpoint is the one with `metadata`, or else the thread's latest.
    """
    if metadata is None:
        metadata = await metadata_of(kept, thread_id)
    stored = await run_settings.settings_of(kept.store, thread_id, metadata)
    return QuorumContext.from_dict({**stored, **(settings or {})})


async def get_thread(thread_id: str, *, database: str | None = None) -> ThreadInfo:
    """The state, status, step history and checkpoints of one thread."""
    async with shared_persistence(database, read_only=True, thread_id=thread_id) as kept:
        return await thread_info(kept, thread_id, with_history=True)


async def ledger(thread_id: str, *, database: str | None = None) -> Ledger:
    """What a thread's model calls spent: in total, per agent and per run.

    Calls, tokens, cost, latency (total, p50 and p95 per call), attempts and errors, from the
    thread's call journal: each call counted once, across crashes and resumes.
    """
    async with shared_persistence(database, read_only=True, thread_id=thread_id) as kept:
        await metadata_of(kept, thread_id)  # ThreadNotFound if there is none
        return await metering.journal_ledger(kept.store, thread_id)


async def list_threads(*, database: str | None = None) -> list[ThreadInfo]:
    """Every Quorum thread in the store, most recently updated first.

    Threads of other graphs that share the store are left out. No database yet: no threads
    (and none is created).
    """
    try:
        async with shared_persistence(database, read_only=True) as kept:
            return await _listed(kept)
    except NoDatabase:
        return []


async def eval_ids(*, database: str | None = None) -> dict[str, int]:
    """The evals whose questions' threads are in the store, each with its count of threads.

    They are not pattern runs, so `list_threads` leaves them out; this says they are there.
    """
    try:
        async with shared_persistence(database, read_only=True) as kept:
            found: dict[str, int] = {}
            for thread_id in await list_thread_ids(kept.saver):
                eval_id = (await metadata_of(kept, thread_id)).get("quorum_eval")
                if eval_id:
                    found[eval_id] = found.get(eval_id, 0) + 1
            return found
    except NoDatabase:
        return {}


async def _listed(kept: Persistence) -> list[ThreadInfo]:
    infos = []
    graphs = {p: compile_pattern(kept, p) for p in PATTERNS}
    leases = await kept.leases.live()
    for thread_id in await list_thread_ids(kept.saver):
        try:
            info = await thread_info(kept, thread_id, graphs=graphs, lease=leases.get(thread_id))
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
            await metadata_of(kept, thread_id)  # raises ThreadNotFound


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
            infos = await _listed(kept)
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


_COMPILED: WeakKeyDictionary[Persistence, dict[str, PatternGraph]] = WeakKeyDictionary()
"""Each opened database's compiled patterns, dropped with the database."""


def compile_pattern(kept: Persistence, pattern: str) -> PatternGraph:
    """`pattern`'s graph on the thread's database, compiled once per opened database.

    Compiling a pattern costs about as much CPU as a short run of it (6 ms for ReAct, whose
    4-turn scripted run takes 11 ms), and a compiled graph holds no run's state: LangGraph
    runs many threads on one at once.
    """
    graphs = _COMPILED.setdefault(kept, {})
    if pattern not in graphs:
        graphs[pattern] = PATTERNS[pattern].compile(
            checkpointer=kept.saver, store=kept.store, name=pattern
        )
    return graphs[pattern]


async def metadata_of(kept: Persistence, thread_id: str) -> dict[str, Any]:
    """The metadata of the thread's latest checkpoint; `ThreadNotFound` if it has none."""
    found = await kept.saver.aget_tuple(thread_config(thread_id))
    if found is None:
        raise ThreadNotFound(
            f"no thread {thread_id!r} in the checkpoint store",
            hint="list threads with `quorum threads`",
        )
    return dict(found.metadata or {})


def _pattern_of(thread_id: str, metadata: dict[str, Any]) -> str:
    """The Quorum pattern that made the thread; `ThreadNotFound` for any other thread."""
    # Runs started from Studio (`langgraph dev`) share the store and carry the graph's id.
    pattern = metadata.get("quorum_pattern") or metadata.get("graph_id", "")
    if pattern not in PATTERNS and metadata.get("quorum_eval"):
        eval_id = metadata["quorum_eval"]
        raise ThreadNotFound(
            f"thread {thread_id!r} answered one question of eval {eval_id!r} (strategy "
            f"{metadata.get('quorum_strategy', '?')!r}); it is not a pattern run",
            hint=f"its answer is in the eval's table: the same `quorum eval` command with "
            f"--id {eval_id} prints it from the checkpoints",
        )
    if pattern not in PATTERNS:
        raise ThreadNotFound(
            f"thread {thread_id!r} was not made by a Quorum pattern (pattern {pattern!r})",
            hint="list Quorum threads with `quorum threads`",
        )
    return pattern


async def thread_info(
    kept: Persistence,
    thread_id: str,
    *,
    with_history: bool = False,
    graphs: dict[str, PatternGraph] | None = None,
    lease: Lease | None = None,
    ignore_lease: bool = False,
    pattern: str | None = None,
) -> ThreadInfo:
    """What the checkpoint store knows of the thread (see `ThreadInfo`).

    `pattern`, when the caller has just run the thread, saves reading it from the store.
    """
    pattern = pattern or _pattern_of(thread_id, await metadata_of(kept, thread_id))
    graph = (graphs or {}).get(pattern) or compile_pattern(kept, pattern)
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


async def find_checkpoint(kept: Persistence, thread_id: str, wanted: str) -> Any:
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
