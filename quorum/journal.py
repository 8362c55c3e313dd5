"""The model-call journal: a reply the endpoint delivered is never requested again.

Every model call made inside a graph step is keyed by what identifies it in the run: the
thread, the checkpoint namespace of the task making it (which ends in the task's id: LangGraph
derives it from the checkpoint the task starts from, so a task that runs again after a crash,
a Ctrl-C or a failed resume has the same one), and a digest of the request itself (agent,
model, settings and messages). Within a task each request is determined by the replies before
it, and those are replayed too, so the digest also tells a call's place in its task.

The reply is written to the run's LangGraph store (the same database as the checkpoints)
before the caller sees it; a task that runs again gets the recorded reply and sends nothing.
Failed attempts are written under the same key, so a call's attempts and errors survive a
crash as well. A reply that made its step fail (it stayed invalid through the repairs) is
marked rejected and never replayed: the step's next run asks again. Outside a graph run with
a store (a node called by hand, a graph compiled without one) calls simply go to the model.
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    convert_to_openai_messages,
    messages_from_dict,
    messages_to_dict,
)
from langchain_core.runnables import RunnableBinding
from langgraph.config import get_config, get_store
from langgraph.store.base import BaseStore

NAMESPACE = "quorum_journal"

FENCE = "__quorum_lease"
"""The configurable key that carries a run's lease holder to its steps: the fencing token of
its journal and ledger writes. (LangGraph copies configurable keys into every checkpoint's
metadata unless they begin with `__`.)"""

NEW_THREAD = "__quorum_new_thread"
"""The configurable key that marks a run that started its thread (the runner saw no checkpoint
of it while holding its lease): the thread's journal holds none of the run's calls, so its
meter starts empty instead of reading the journal."""


@dataclass
class CallRecord:
    """What is known of one model call: its reply once it has one, and every attempt."""

    agent: str
    model: str
    reply: AIMessage | None = None
    attempts: int = 0
    """Requests sent for this call, over every run of its task."""
    errors: list[str] = field(default_factory=list)
    """Why each failed attempt failed (redacted)."""
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    """Time the answered request took."""
    cost_usd: float = 0.0
    """What the answered request cost, from the price table."""
    run_seconds: float = 0.0
    """How long the run had been running (in any process) when the reply came."""
    started_at: float = 0.0
    """When the answered request was sent (Unix time); 0 in records written before Quorum
    kept it."""
    run: str = ""
    """Which run of the thread got the reply."""
    rejected: bool = False
    """The step that used the reply failed because of it (replies that stayed invalid, a
    plan that stayed invalid): kept for the record, never replayed; the call is made again."""

    def to_json(self) -> dict[str, Any]:
        """The record as the store keeps it."""
        data = asdict(self)
        data["reply"] = messages_to_dict([self.reply])[0] if self.reply is not None else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CallRecord:
        """A record read back from the store."""
        reply = data.get("reply")
        message = messages_from_dict([reply])[0] if reply else None
        # Records written by an older Quorum lack the newer fields: they take their defaults.
        return cls(**{**data, "reply": message if isinstance(message, AIMessage) else None})


@dataclass(frozen=True)
class JournalEntry:
    """Where one call is recorded."""

    store: BaseStore
    namespace: tuple[str, ...]
    key: str
    thread_id: str
    run: str
    """Which run of the thread is making the call (budgets are metered per run)."""
    holder: str = ""
    """The run's lease holder: the write is refused once another run holds the thread."""
    new_thread: bool = False
    """The run started the thread (`NEW_THREAD`)."""

    async def read(self) -> CallRecord | None:
        """The record of this call, if an earlier run of its task made it."""
        item = await self.store.aget(self.namespace, self.key)
        return CallRecord.from_json(item.value) if item is not None else None

    async def write(self, record: CallRecord) -> None:
        """Record the call durably (the store commits before this returns)."""
        value = record.to_json()
        await put(self.store, self.namespace, self.key, value, self.thread_id, self.holder)


async def put(
    store: BaseStore,
    namespace: tuple[str, ...],
    key: str,
    value: dict[str, Any],
    thread_id: str,
    holder: str,
) -> None:
    """Write a journal or ledger record of `thread_id`, fenced by the lease `holder`.

    A run that stalled past its lease (a frozen or swapped-out process) may wake after
    another run took its thread over; what it then writes would mix into that run's record.
    With a `holder`, a store that can (Quorum's SQLite and PostgreSQL stores) checks in the
    same transaction as the write that the lease is still that holder's, and refuses the
    write with `LeaseLost` if not. Without one (a run not started by Quorum's runner, such as
    a LangGraph server run, which has no lease) the write is plain.
    """
    fenced = getattr(store, "aput_fenced", None)
    if holder and fenced is not None:
        await fenced(namespace, key, value, thread_id=thread_id, holder=holder)
    else:
        await store.aput(namespace, key, value, index=False)


def holder_of(config: Any) -> str:
    """The lease holder of the run `config` belongs to; empty for a run without a lease."""
    return str(config.get("configurable", {}).get(FENCE) or "")


_used: ContextVar[list[tuple[JournalEntry, CallRecord]] | None] = ContextVar(
    "quorum_journal_used", default=None
)


@contextmanager
def step_calls() -> Iterator[list[tuple[JournalEntry, CallRecord]]]:
    """Collect the journaled calls whose replies the step running in this block uses."""
    calls: list[tuple[JournalEntry, CallRecord]] = []
    token = _used.set(calls)
    try:
        yield calls
    finally:
        _used.reset(token)


def used(entry: JournalEntry, record: CallRecord) -> None:
    """Note that the running step uses the reply in `record` (requested or replayed)."""
    calls = _used.get()
    if calls is not None:
        calls.append((entry, record))


async def reject(calls: Sequence[tuple[JournalEntry, CallRecord]]) -> None:
    """Mark the replies of a step that failed because of them: the next run asks again.

    Replaying them would fail the step the same way on every resume, for nothing.
    """
    for entry, record in calls:
        await entry.write(replace(record, rejected=True))


def entry_for(agent: str, model: Any, messages: Sequence[BaseMessage]) -> JournalEntry | None:
    """Where the call `agent` is about to make is journaled; None outside a journaled run."""
    try:
        config = get_config()
        store = get_store()
    except RuntimeError:  # not inside a graph step
        return None
    configurable = config.get("configurable", {})
    thread_id = configurable.get("thread_id")
    if store is None or not thread_id:
        return None
    digest = request_digest(agent, model, messages)
    task = configurable.get("checkpoint_ns", "")
    run = str(config.get("metadata", {}).get("run_id", ""))
    return JournalEntry(
        store,
        thread_namespace(NAMESPACE, str(thread_id)),
        f"{task}#{digest}",
        str(thread_id),
        run,
        holder_of(config),
        bool(configurable.get(NEW_THREAD)),
    )


async def records(store: BaseStore, thread_id: str) -> list[CallRecord]:
    """Every call a thread has journaled, answered or not."""
    return [record for _, record in await keyed_records(store, thread_id)]


async def keyed_records(store: BaseStore, thread_id: str) -> list[tuple[str, CallRecord]]:
    """Every call a thread has journaled, with its key: `task_namespace#digest`.

    The task namespace says which task made the call, and which subgraph task (a worker)
    that task ran in: everything before its last `|`.
    """
    namespace = thread_namespace(NAMESPACE, thread_id)
    found: list[tuple[str, CallRecord]] = []
    while items := await store.asearch(namespace, limit=500, offset=len(found)):
        found += [(item.key, CallRecord.from_json(item.value)) for item in items]
    return found


def thread_namespace(kind: str, thread_id: str) -> tuple[str, ...]:
    """The store namespace of one thread's records of `kind` (journal, effects)."""
    # Store labels may not hold '.', which thread ids may.
    return (kind, thread_id.replace("%", "%25").replace(".", "%2E"))


async def delete_thread(store: BaseStore, kind: str, thread_id: str) -> int:
    """Delete every record of `kind` a thread has; how many there were."""
    namespace = thread_namespace(kind, thread_id)
    deleted = 0
    while items := await store.asearch(namespace, limit=500):
        for item in items:
            await store.adelete(namespace, item.key)
        deleted += len(items)
    return deleted


def request_digest(agent: str, model: Any, messages: Sequence[BaseMessage]) -> str:
    """A digest of everything that decides a reply: who asks, which model, how, and what.

    The SHA-256 of `{"agent": ..., "messages": [...], "model": ...}` as JSON (sorted keys),
    each message in its wire form (message ids, which differ between runs, left out). The
    JSON is put together from each message's own, kept while the message lives: a request
    carries the whole conversation so far, and encoding all of it again before every call
    made a late step of a long thread cost more than an early one.
    """
    pieces = []
    for message in messages:
        kept = _wired.get(id(message))
        if kept is not None and kept[0]() is message and kept[1] == _wire_fields(message):
            pieces.append(kept[2])  # unchanged since its JSON was made
        else:
            pieces.append(_wire(message))
    encoded = (
        f'{{"agent": {_json(agent)}, "messages": ['
        + ", ".join(piece for piece in pieces if piece)
        + f'], "model": {_json(describe_model(model))}}}'
    )
    return hashlib.sha256(encoded.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)


_wired: dict[int, tuple[weakref.ref[BaseMessage], Any, str]] = {}
"""Each live message's wire form as JSON, by `id()`, with the fields it was made from."""

_WIRE_FIELDS = ("content", "name", "additional_kwargs", "tool_calls", "tool_call_id", "role")
"""The fields of a message that its wire form is made from (those its type has)."""


@functools.cache
def _fields_getter(kind: type[BaseMessage]) -> Callable[[BaseMessage], Any]:
    return operator.attrgetter(*(f for f in _WIRE_FIELDS if f in kind.model_fields))


def _wire_fields(message: Any) -> Any:
    """The fields `message`'s wire form is made from, as they are now."""
    if not isinstance(message, BaseMessage):
        return None
    return _fields_getter(type(message))(message)


def _wire(message: BaseMessage) -> str:
    """`message`'s wire form as the digest's JSON: its items of the `messages` list.

    Kept while the message lives, and made again if a field it is made from was replaced
    (messages in a graph's state are not changed in place: a new one replaces one by id).
    """
    # One message can make several wire messages (tool results in a human turn's blocks).
    piece = ", ".join(_json(m) for m in convert_to_openai_messages([message]))
    if not isinstance(message, BaseMessage):
        return piece  # a tuple or a dict made into a message here: made again each time
    try:
        alive = weakref.ref(message, functools.partial(_forget, id(message)))
    except TypeError:  # a message type that cannot be referred to weakly: not kept
        return piece
    _wired[id(message)] = (alive, _wire_fields(message), piece)
    return piece


def _forget(key: int, _: weakref.ref[BaseMessage]) -> None:
    _wired.pop(key, None)  # the message is gone: its id may be another's next


def describe_model(model: Any) -> dict[str, Any]:
    """The model and every setting bound to it (tools, response format, sampling)."""
    bound: dict[str, Any] = {}
    while isinstance(model, RunnableBinding):
        bound = {**model.kwargs, **bound}
        model = model.bound
    return {
        "name": model_name(model),
        "temperature": getattr(model, "temperature", None),
        "seed": getattr(model, "seed", None),
        "bound": bound,
    }


def model_name(model: Any) -> str:
    """The model's name, as the endpoint knows it."""
    while isinstance(model, RunnableBinding):
        model = model.bound
    name = getattr(model, "model_name", None) or getattr(model, "model", None)
    return str(name or type(model).__name__)
