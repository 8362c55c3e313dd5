"""A run's life, owned in one place.

This is what every way in (the CLI, `quorum.run` and `resume`, the eval) does around a graph
run:

- the lease: `hold_thread()` holds the thread while the run lives; its holder is the fencing token
  of the run's journal and ledger writes;
- the run id, minted into the checkpoint metadata: budgets are metered per run, and the
  ledger counts per run;
- the run span (OpenTelemetry) and the LangSmith tracer, ended with the run's status and
  what the thread spent;
- every step durable (`durability="sync"`) and reported as progress (`RunEvent`);
- the meter dropped when the run ends;
- how the run ended, as a thread status (`status_of`) and as an error a person can act on
  (`RunFailed` naming the agent, a full disk, a thread taken over).

The LangGraph server drives runs itself; what it shares with these (input and settings
checked, the meter dropped) is done by the pattern graph (`quorum.graphs.pattern`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, StreamMode

from quorum import journal, metering, telemetry
from quorum.checkpoints import Persistence
from quorum.checkpoints.lease import Lease, hold
from quorum.context import QuorumContext
from quorum.errors import BudgetExceeded, LeaseLost, QuorumError, RunFailed
from quorum.graphs import ANSWER_WRITERS
from quorum.outcome import trace_outcome
from quorum.settings import get_settings, redact
from quorum.state import Usage, step_label


@dataclass(frozen=True)
class RunEvent:
    """Progress of a run: an agent started, wrote part of a reply, or finished."""

    kind: Literal["started", "wrote", "finished"]
    agent: str
    usage: dict[str, Usage] = field(default_factory=dict)
    """Usage the finished agent reported (empty on start)."""
    error: str | None = None
    """Why the agent failed, if it did."""
    text: str = ""
    """What the agent wrote (`wrote`): a few tokens of a reply as it streams, or a reply
    replayed from the journal, whole."""
    call: str = ""
    """Which reply `text` belongs to (`wrote`): the same for every part of one reply."""
    replayed: bool = False
    """The reply came from the journal (`wrote`): no request was made for it."""
    structured: bool = False
    """The reply is JSON for a schema, not prose (`wrote`)."""
    answer: bool = False
    """The reply is the run's answer as its writer writes it (`wrote`): the pattern's
    answer writer's prose (`quorum.graphs.ANSWER_WRITERS`)."""


OnEvent = Callable[[RunEvent], None]


def thread_config(thread_id: str) -> RunnableConfig:
    """The config that names a thread's latest checkpoint."""
    return {"configurable": {"thread_id": thread_id}}


def hold_thread(kept: Persistence, thread_id: str) -> contextlib.AbstractAsyncContextManager[Lease]:
    """Hold `thread_id` for one run, or raise `ThreadBusy` at once (see `checkpoints.lease`)."""
    return hold(kept.leases, thread_id, get_settings().lease_seconds)


async def drive(
    graph: CompiledStateGraph[Any, QuorumContext, Any, Any],
    payload: dict[str, Any] | Command[Any] | None,
    name: str,
    thread_id: str,
    context: QuorumContext,
    on_event: OnEvent | None,
    holder: str,
    *,
    start: RunnableConfig | None = None,
    metadata: dict[str, str] | None = None,
    stream: bool = False,
    new_thread: bool = False,
) -> None:
    """Run `graph` on the thread whose lease `holder` holds, to its end or its first stop.

    `new_thread`: the caller saw no checkpoint of the thread while holding its lease.

    With `stream`, `on_event` also hears each agent's replies as they are written (`wrote`
    events, from LangGraph's `messages` stream).
    `name` names the run in traces (`quorum.NAME`); a pattern's name also marks the thread
    as that pattern's in its metadata, unless `metadata` says what the run is instead (an
    eval's question). A budget that runs out ends it quietly (the thread says
    `budget_exceeded`); a failure raises `RunFailed`, naming the agent and how to continue.
    """
    run_id = str(uuid.uuid4())
    callbacks = telemetry.langsmith_callbacks()
    config = _run_config(name, thread_id, holder, run_id, callbacks, start, metadata)
    if new_thread:
        config["configurable"][journal.NEW_THREAD] = True
    try:
        resumed = not isinstance(payload, dict)  # a new run's payload is its input
        with telemetry.run_span(name, thread_id, run_id, resumed=resumed) as span:
            try:
                streams = stream and on_event is not None
                await _relay(graph, payload, config, context, on_event, streams=streams)
            except Exception:
                await trace_outcome(graph, config, span)
                raise
            await trace_outcome(graph, config, span)
    except BudgetExceeded:
        return  # the thread stops as `budget_exceeded`, resumable with a larger budget
    except LeaseLost:
        raise  # the thread is another run's now: nothing of it is this run's to report
    except Exception as error:
        raise await _stopped(graph, name, thread_id, error) from error
    finally:
        metering.forget(thread_id)
        if callbacks:
            await asyncio.to_thread(telemetry.flush_langsmith, callbacks)


async def _relay(
    graph: CompiledStateGraph[Any, QuorumContext, Any, Any],
    payload: dict[str, Any] | Command[Any] | None,
    config: RunnableConfig,
    context: QuorumContext,
    on_event: OnEvent | None,
    *,
    streams: bool,
) -> None:
    """Run the graph to its end or first stop, telling `on_event` what its agents do."""
    modes: list[StreamMode] = ["tasks", "messages"] if streams else ["tasks"]
    labels: dict[str, str] = {}
    # durability="sync": a step's checkpoint is on disk before the next starts. Streamed,
    # with subgraphs: a worker's tool loop is a graph of its own, and its replies stream too;
    # its steps are not the run's (the worker is one agent, started and finished).
    async for part in graph.astream(
        payload, config, context=context, stream_mode=modes, durability="sync", subgraphs=streams
    ):
        if on_event is None:
            continue
        namespace, mode, event = part if streams else ((), *part)
        if mode == "tasks":
            if not namespace:
                on_event(_run_event(cast(dict[str, Any], event), labels))
        elif (wrote := _wrote(*event)) is not None:
            on_event(wrote)


def _run_config(
    name: str,
    thread_id: str,
    holder: str,
    run_id: str,
    callbacks: list[Any],
    start: RunnableConfig | None,
    metadata: dict[str, str] | None,
) -> RunnableConfig:
    """The config of one run: its thread (or fork point), fence, names, metadata, tracer."""
    # A checkpoint id in `start` forks from that checkpoint (LangGraph's time travel).
    base = start or thread_config(thread_id)
    return {
        **base,
        # The lease holder fences the run's journal and ledger writes (journal.put).
        "configurable": {**base.get("configurable", {}), journal.FENCE: holder},
        "run_name": f"quorum.{name}",
        "tags": ["quorum", *name.split(".")],
        # Metadata is stored with every checkpoint; LangGraph keeps only scalar values. (The
        # run settings are stored once per run, by the graph: quorum/run_settings.py.)
        "metadata": {
            **(metadata if metadata is not None else {"quorum_pattern": name}),
            # Budgets are metered per run: a new id starts a meter seeded from the journal.
            "run_id": run_id,
        },
        "callbacks": callbacks,
    }


async def _stopped(
    graph: CompiledStateGraph[Any, QuorumContext, Any, Any],
    name: str,
    thread_id: str,
    error: Exception,
) -> QuorumError:
    """What a run that raised `error` tells its caller: which agent failed, how to go on."""
    if _disk_full(error):
        return QuorumError(
            f"{name} run {thread_id} stopped: the disk holding its database is full "
            f"({get_settings().database_target}); every step finished before it is saved",
            hint=f"free space there, then continue with `quorum resume {thread_id}`",
        )
    state = await graph.aget_state(thread_config(thread_id))
    failed = next((t.name for t in state.tasks if t.error), None) or "unknown"
    hint = error.hint if isinstance(error, QuorumError) else ""
    reason = error.message if isinstance(error, QuorumError) else f"{error!r}"
    return RunFailed(
        redact(f"{name} run {thread_id} stopped: agent '{failed}' failed: {reason}"),
        agent=failed,
        thread_id=thread_id,
        hint=(hint + "; then " if hint else "fix the cause, then ")
        + f"continue with `quorum resume {thread_id}`",
    )


def _run_event(event: dict[str, Any], labels: dict[str, str]) -> RunEvent:
    if "result" not in event:
        # A worker sent one step of a plan is named by its agent and step, so parallel
        # workers can be told apart; a tool call by its tool.
        labels[event["id"]] = step_label(event.get("input")) or event["name"]
        return RunEvent("started", labels[event["id"]])
    result = event.get("result") or {}
    usage = result.get("usage", {}) if isinstance(result, dict) else {}
    error = event.get("error")
    agent = labels.pop(event["id"], event["name"])
    return RunEvent("finished", agent, usage, str(error) if error else None)


def _wrote(message: Any, metadata: dict[str, Any]) -> RunEvent | None:
    """A model's streamed or replayed reply as a `wrote` event (None for other messages)."""
    agent = metadata.get("quorum_agent")
    # Tool results and messages a node returns come in the same stream: only the model
    # calls Quorum makes are an agent writing.
    if agent is None or not isinstance(message, AIMessage | AIMessageChunk):
        return None
    text = message.text
    if not text:
        return None
    structured = bool(metadata.get("quorum_structured"))
    return RunEvent(
        "wrote",
        str(agent),
        text=text,
        call=str(message.id or ""),
        replayed=bool(metadata.get("quorum_replayed")),
        structured=structured,
        # The run's pattern is in its metadata (see `drive`), so in every message's.
        answer=not structured and ANSWER_WRITERS.get(metadata.get("quorum_pattern", "")) == agent,
    )


def _disk_full(error: BaseException | None) -> bool:
    """Whether `error`, or an error it came from, is a disk out of space."""
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if isinstance(error, sqlite3.OperationalError) and "disk is full" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False
