"""The Python API: run a pattern on a durable thread, resume it, list and inspect threads.

Every run is checkpointed (SQLite by default) under a thread id. The pattern, the run's
context and the owning process are stored in the checkpoint metadata, so `resume` continues
a thread with exactly the settings it started with, and `list_threads` can tell a thread
that is still running from one whose process died.

    result = await quorum.run("debate", "Is Rust or Go better for a CLI?")
    result = await quorum.resume(result.thread_id)
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import StateSnapshot

from quorum import models
from quorum.checkpoints import list_thread_ids, open_checkpointer
from quorum.context import QuorumContext
from quorum.errors import QuorumError, RunFailed, ThreadNotFound, UsageError
from quorum.graphs import PATTERNS
from quorum.state import Usage

Status = Literal["completed", "interrupted", "failed", "running"]


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
    if not text.strip():
        raise UsageError(
            "the input is empty", hint="give the goal, topic, question or task to work on"
        )
    thread_id = thread_id or new_thread_id()
    context = context or QuorumContext()
    # A bad endpoint, key or model name fails here, before anything is saved.
    await models.preflight(context)
    async with open_checkpointer(database) as saver:
        if await saver.aget_tuple(_config(thread_id)) is not None:
            raise UsageError(
                f"thread {thread_id!r} already exists",
                hint=f"continue it with `quorum resume {thread_id}` or choose another id",
            )
        graph = PATTERNS[pattern].compile(checkpointer=saver, name=pattern)
        await _drive(graph, {"input": text}, pattern, thread_id, context, on_event)
        return await _thread_info(saver, thread_id)


async def resume(
    thread_id: str, *, database: str | None = None, on_event: OnEvent | None = None
) -> ThreadInfo:
    """Continue an interrupted, crashed or failed thread from its last checkpoint."""
    async with open_checkpointer(database) as saver:
        info = await _thread_info(saver, thread_id)
        if info.status == "completed":
            return info
        if info.status == "running":
            raise UsageError(
                f"thread {thread_id!r} is still running in another process",
                hint="wait for it to finish, or stop that process and resume again",
            )
        metadata = await _metadata(saver, thread_id)
        context = QuorumContext.from_dict(json.loads(metadata.get("quorum_context", "{}")))
        await models.preflight(context)
        graph = PATTERNS[info.pattern].compile(checkpointer=saver, name=info.pattern)
        await _drive(graph, None, info.pattern, thread_id, context, on_event)
        return await _thread_info(saver, thread_id)


async def get_thread(thread_id: str, *, database: str | None = None) -> ThreadInfo:
    """The state, status and step history of one thread."""
    async with open_checkpointer(database) as saver:
        return await _thread_info(saver, thread_id, with_history=True)


async def list_threads(*, database: str | None = None) -> list[ThreadInfo]:
    """Every Quorum thread in the store, most recently updated first.

    Threads of other graphs that share the store are left out.
    """
    infos = []
    async with open_checkpointer(database) as saver:
        graphs = {p: b.compile(checkpointer=saver, name=p) for p, b in PATTERNS.items()}
        for thread_id in await list_thread_ids(saver):
            try:
                infos.append(await _thread_info(saver, thread_id, graphs=graphs))
            except ThreadNotFound:
                continue  # not made by a Quorum pattern
    return sorted(infos, key=lambda info: info.updated_at, reverse=True)


def new_thread_id() -> str:
    """A fresh, short thread id."""
    return uuid.uuid4().hex[:12]


def _config(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id}}


async def _drive(
    graph: CompiledStateGraph[Any, QuorumContext, Any, Any],
    payload: dict[str, Any] | None,
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
            "quorum_owner": _owner(),
        },
    }
    labels: dict[str, str] = {}
    try:
        # durability="sync": a step's checkpoint is on disk before the next step starts,
        # so no side effect of a finished step can be repeated after a crash.
        async for event in graph.astream(
            payload, config, context=context, stream_mode="tasks", durability="sync"
        ):
            if on_event is not None:
                on_event(_run_event(event, labels))
    except Exception as error:
        state = await graph.aget_state(config)
        failed = next((t.name for t in state.tasks if t.error), None) or "unknown"
        hint = error.hint if isinstance(error, QuorumError) else ""
        reason = error.message if isinstance(error, QuorumError) else f"{error!r}"
        raise RunFailed(
            f"{pattern} run {thread_id} stopped: agent '{failed}' failed: {reason}",
            agent=failed,
            thread_id=thread_id,
            hint=(hint + "; then " if hint else "fix the cause, then ")
            + f"continue with `quorum resume {thread_id}`",
        ) from error


def _run_event(event: dict[str, Any], labels: dict[str, str]) -> RunEvent:
    if "result" not in event:
        task = event.get("input")
        label = event["name"]
        # A worker sent one step of a plan is named by its agent and step, so parallel
        # workers can be told apart.
        if isinstance(task, dict) and {"step_id", "worker"} <= task.keys():
            label = f"{task['worker']} ({task['step_id']})"
        labels[event["id"]] = label
        return RunEvent("started", labels[event["id"]])
    result = event.get("result") or {}
    usage = result.get("usage", {}) if isinstance(result, dict) else {}
    error = event.get("error")
    agent = labels.pop(event["id"], event["name"])
    return RunEvent("finished", agent, usage, str(error) if error else None)


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's process: nothing here can tell; assume it is gone
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _metadata(saver: BaseCheckpointSaver, thread_id: str) -> dict[str, Any]:
    found = await saver.aget_tuple(_config(thread_id))
    if found is None:
        raise ThreadNotFound(
            f"no thread {thread_id!r} in the checkpoint store",
            hint="list threads with `quorum threads`",
        )
    return dict(found.metadata or {})


def _status(snapshot: StateSnapshot, owner: str) -> tuple[Status, str | None]:
    error = next((str(t.error) for t in snapshot.tasks if t.error), None)
    if error is not None:
        return "failed", error
    if not snapshot.next:
        return "completed", None
    if snapshot.interrupts:
        return "interrupted", None
    if owner and owner != _owner() and _owner_alive(owner):
        return "running", None
    return "interrupted", None


async def _thread_info(
    saver: BaseCheckpointSaver,
    thread_id: str,
    *,
    with_history: bool = False,
    graphs: dict[str, CompiledStateGraph[Any, QuorumContext, Any, Any]] | None = None,
) -> ThreadInfo:
    metadata = await _metadata(saver, thread_id)
    # Runs started from Studio (`langgraph dev`) share the store and carry the graph's id.
    pattern = metadata.get("quorum_pattern") or metadata.get("graph_id", "")
    if pattern not in PATTERNS:
        raise ThreadNotFound(
            f"thread {thread_id!r} was not made by a Quorum pattern (pattern {pattern!r})",
            hint="list Quorum threads with `quorum threads`",
        )
    graph = (graphs or {}).get(pattern) or PATTERNS[pattern].compile(
        checkpointer=saver, name=pattern
    )
    snapshot = await graph.aget_state(_config(thread_id))
    status, error = _status(snapshot, metadata.get("quorum_owner", ""))
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
                        error=next((str(t.error) for t in past.tasks if t.error), None),
                    )
                )
        history.reverse()
    values = dict(snapshot.values)
    return ThreadInfo(
        thread_id=thread_id,
        pattern=pattern,
        status=status,
        updated_at=snapshot.created_at or datetime.min.isoformat(),
        input=values.get("input", ""),
        output=values.get("output", ""),
        usage=values.get("usage", {}),
        error=error,
        values=values,
        history=history,
    )
