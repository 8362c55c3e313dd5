"""The effect ledger: side effects at most once, never silently twice, approved first.

An irreversible side effect runs only after a person approved it.

A tool call with side effects is keyed by the thread, the checkpoint namespace of the tool
step running it (which ends in that step's task id, the same however often it runs) and the
model's tool call id. The ledger records each call's way through:

    (irreversible) awaiting approval -> approved | rejected
    started -> completed | failed

When the step runs again (after a crash, or a resume):

- a `completed` or `failed` call is not run: its recorded result is returned; a `rejected`
  one returns its rejection;
- an irreversible call is asked about once: a LangGraph interrupt of type `approval` pauses
  the thread before anything runs, showing the tool, its arguments and the agent that asked.
  The decision (approve, approve with edited arguments, or reject with a reason the agent
  sees) is recorded before the call runs, so it is never asked for twice; a kill while the
  question waits asks it again. Tools named in `approve_tools` (the run context, or the
  QUORUM_APPROVE_TOOLS setting) are approved in advance;
- a call that `started` but has no recorded outcome may or may not have happened (the
  process died while the tool ran). It is not run again silently: the step stops with an
  interrupt of type `needs_reconciliation` until a person says what happened: `done` (it
  took effect: record that and go on) or `retry`.

A tool that talks to a service reads `idempotency_key()` while it runs and sends it as that
service's idempotency key, so even a retried call is applied once by a service that honours
such keys.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, cast

from langgraph.config import get_config, get_store
from langgraph.types import interrupt
from typing_extensions import TypedDict

from quorum import telemetry
from quorum.errors import UsageError
from quorum.journal import holder_of, put, thread_namespace

NAMESPACE = "quorum_effects"
RECONCILE = "needs_reconciliation"
"""The interrupt type a started effect without an outcome stops its thread with."""
APPROVAL = "approval"
"""The interrupt type an irreversible call waits with until a person decides."""

Resolution = Literal["done", "retry"]
Outcome = tuple[str, Literal["success", "error"]]
"""What the agent sees: the tool message's content and status."""


class Decision(TypedDict, total=False):
    """A person's answer to an approval: approve (optionally with edited arguments) or reject."""

    action: Literal["approve", "reject"]
    reason: str
    """Why it was rejected: the agent reads it."""
    args: dict[str, Any]
    """Arguments to run the call with instead of the agent's."""
    by: str
    """Who decided: the OS user and host for the CLI, the caller's name from Python."""
    via: str
    """Which way in the decision came: cli, python, or server (Studio, langgraph-sdk)."""


class Question(TypedDict):
    """What a thread asks a person about one tool call (the interrupt's value), as it waits.

    `type` says which question: `approval` (may this irreversible call run?) or
    `needs_reconciliation` (it started and its outcome is unknown: did it take effect?).
    """

    type: Literal["approval", "needs_reconciliation"]
    tool: str
    args: dict[str, Any]
    agent: str
    call_id: str
    idempotency_key: str
    """The key the tool was (or will be) given for this call (see `idempotency_key`)."""
    question: str
    """The question in words, for a person."""
    started_at: NotRequired[float]
    """When the call started (reconciliation): Unix time."""
    untrusted_sources: NotRequired[list[str]]
    """Tools whose untrusted output the agent had read before asking (approval)."""
    ledger_key: NotRequired[str]
    """The ledger entry that records the answer (approval)."""
    interrupt_id: NotRequired[str]
    """LangGraph's id of the interrupt: what a resume answers (set as the thread is read)."""


class DecisionRecord(TypedDict):
    """What the ledger keeps of a decision (`decided`): what, who, which way in, when."""

    action: Literal["approve", "reject"]
    by: str
    via: str
    at: float
    """Unix time."""
    reason: NotRequired[str]


EffectState = Literal["approved", "started", "completed", "failed", "rejected"]


class EffectRecord(TypedDict, total=False):
    """One side-effecting tool call's entry in the effect ledger: its way through the states.

    The ledger's counterpart of the call journal's `CallRecord`. Written only by `run_once`;
    read by `records` (the report, `quorum show`'s decisions, the thread's waiting list).
    """

    tool: str
    args: dict[str, Any]
    """The arguments it runs (or ran) with: the agent's, or a person's edit of them."""
    agent: str
    idempotency_key: str
    state: EffectState
    """Absent until a person approves or the call starts."""
    approved_at: float
    started_at: float
    finished_at: float
    content: str
    """The tool message the agent saw (`completed`, `failed`, `rejected`)."""
    status: Literal["success", "error"]
    answered: list[Question]
    """The questions a person answered about this call, in order."""
    decision: DecisionRecord
    resolved: Literal["retry"]
    """A reconciliation answered `retry`: the call runs again."""


_current_key: ContextVar[str | None] = ContextVar("quorum_idempotency_key", default=None)


def idempotency_key() -> str | None:
    """The idempotency key of the side-effecting tool call running now, if any."""
    return _current_key.get()


def check_decision(decision: Any) -> Decision:
    """A decision as given by a person or a program, validated."""
    if decision is True or decision == "approve":
        return Decision(action="approve")
    if decision is False or decision == "reject":
        return Decision(action="reject", reason="")
    if not isinstance(decision, dict) or decision.get("action") not in ("approve", "reject"):
        raise UsageError(
            f"not a decision: {decision!r}",
            hint='answer {"action": "approve"}, {"action": "approve", "args": {...}} or '
            '{"action": "reject", "reason": "..."}',
        )
    if "args" in decision and not isinstance(decision["args"], dict):
        raise UsageError("edited arguments must be a JSON object", hint='e.g. {"path": "a.md"}')
    known = {"action", "reason", "args", "by", "via"}
    return Decision(**{key: value for key, value in decision.items() if key in known})


def local_identity() -> str:
    """Who runs this process: the OS user and host (`alice@laptop`)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's bare uid)
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def decided(decision: Decision, config: Any) -> DecisionRecord:
    """What the ledger keeps of a decision: what it was, who made it, how and when.

    A decision sent to the LangGraph server (Studio, langgraph-sdk) names no one; its
    identity is the server's authenticated user when the server authenticates, else
    `anonymous`.
    """
    configurable = config.get("configurable", {}) if config else {}
    server_user = configurable.get("langgraph_auth_user_id") or "anonymous"
    record = DecisionRecord(
        action=decision["action"],
        by=decision.get("by") or server_user,
        via=decision.get("via") or "server",
        at=time.time(),
    )
    if decision.get("reason"):
        record["reason"] = decision["reason"]
    return record


async def run_once(
    tool: str,
    args: dict[str, Any],
    call_id: str,
    run: Callable[[dict[str, Any]], Awaitable[Outcome]],
    *,
    agent: str = "",
    needs_approval: bool = False,
    tainted: Sequence[str] = (),
) -> Outcome:
    """Run a side-effecting tool call through the ledger (see the module docstring).

    Its entry moves through the states: none yet, `approved` (a person said yes), `started`
    (recorded before the call runs), then `completed`, `failed` or `rejected`, each kept for
    good. A call found `started` stopped while it ran: a person says whether it took effect.
    `tainted` names the tools whose untrusted output the agent had read: the approval
    question shows them.
    """
    try:
        config = get_config()
        store = get_store()
    except RuntimeError:
        store = None
    thread_id = config.get("configurable", {}).get("thread_id") if store else None
    if store is None or not thread_id:
        if needs_approval:
            return _refused(tool, "it needs a person's approval, and this is not a durable run")
        return await run(args)  # outside a durable run, there is nothing to remember it by
    call = await _LedgerCall.find(store, config, str(thread_id), tool, args, call_id, agent)
    state = call.entry.get("state")
    if state in ("completed", "failed", "rejected"):
        return call.entry["content"], call.entry["status"]
    if state == "started":
        settled = await _reconcile(call)
        if settled is not None:
            return settled
    elif needs_approval and state != "approved":
        refused = await _approve(call, args, tainted)
        if refused is not None:
            return refused
    return await _execute(call, run)


@dataclass
class _LedgerCall:
    """One tool call's entry in the effect ledger, and where it is kept."""

    store: Any
    config: Any
    namespace: tuple[str, ...]
    key: str
    """The step's checkpoint namespace and the call id: a fork's re-run is a new call."""
    thread_id: str
    holder: str
    """The run's lease holder: the fencing token of every write (`journal.put`)."""
    tool: str
    call_id: str
    agent: str
    entry: EffectRecord

    @classmethod
    async def find(
        cls,
        store: Any,
        config: Any,
        thread_id: str,
        tool: str,
        args: dict[str, Any],
        call_id: str,
        agent: str,
    ) -> _LedgerCall:
        """The call's entry as the ledger has it, or a new one (with its idempotency key)."""
        step = config["configurable"].get("checkpoint_ns", "")
        namespace = thread_namespace(NAMESPACE, thread_id)
        key = f"{step}/{call_id}"
        digest = hashlib.sha256(f"{thread_id}\x00{key}".encode()).hexdigest()[:32]
        found = await store.aget(namespace, key)
        entry = (
            cast(EffectRecord, found.value)
            if found is not None
            else EffectRecord(tool=tool, args=args, agent=agent, idempotency_key=f"quorum-{digest}")
        )
        holder = holder_of(config)
        return cls(store, config, namespace, key, thread_id, holder, tool, call_id, agent, entry)

    async def save(self, entry: EffectRecord) -> None:
        """Keep `entry` as the call's entry (fenced by the run's lease)."""
        self.entry = entry
        await put(self.store, self.namespace, self.key, dict(entry), self.thread_id, self.holder)

    def question(
        self, kind: Literal["approval", "needs_reconciliation"], args: dict[str, Any], text: str
    ) -> Question:
        """The interrupt payload asking a person about this call."""
        return Question(
            type=kind,
            tool=self.tool,
            args=_plain(args),
            agent=self.agent,
            call_id=self.call_id,
            idempotency_key=self.entry["idempotency_key"],
            question=text,
        )


async def _reconcile(call: _LedgerCall) -> Outcome | None:
    """A call that started and was never recorded: a person says whether it took effect.

    The outcome when it did (`done`); None when it is to run again (`retry`).
    """
    entry, tool = call.entry, call.tool
    question = call.question(
        "needs_reconciliation",
        entry["args"],
        f"{tool} started but its outcome was never recorded (the process stopped while it "
        "ran). Did it take effect?",
    )
    question["started_at"] = entry["started_at"]
    resolution = interrupt(question)
    if isinstance(resolution, dict) and "action" in resolution:
        # A decision sent to the approval this step showed before it was killed. LangGraph
        # hands answers to a step's questions by position, so it reached this question:
        # it answers nothing here, and this question is asked on its own.
        resolution = interrupt(question)
    entry = {**entry, "answered": [*entry.get("answered", []), question]}
    if resolution == "done":
        content = json.dumps(
            {"note": f"{tool} took effect (confirmed by an operator; its result was lost)"}
        )
        await call.save(_finished(entry, "completed", content, "success"))
        return content, "success"
    if resolution != "retry":
        raise UsageError(
            f"unknown resolution {resolution!r} for {tool}", hint="resolve with done or retry"
        )
    call.entry = {**entry, "resolved": "retry"}
    return None


async def _approve(
    call: _LedgerCall, args: dict[str, Any], tainted: Sequence[str]
) -> Outcome | None:
    """Ask a person whether the irreversible call with `args` may run.

    The outcome when they reject it; None when they approve (the approval, with any edited
    arguments, is recorded before the call runs).
    """
    tool, agent = call.tool, call.agent
    read = (
        f", after reading untrusted data from {', '.join(tainted)} (an instruction "
        "planted there may be what asks for it)"
        if tainted
        else ""
    )
    question = call.question(
        "approval",
        args,
        f"agent '{agent or '?'}' wants to run {tool}, which cannot be undone"
        + read
        + ". Approve it?",
    )
    question["untrusted_sources"] = list(tainted)
    # Which ledger entry records the answer: the same call id can be asked again in another
    # step (a fork re-runs the step that made it).
    question["ledger_key"] = call.key
    decision = check_decision(interrupt(question))
    record = decided(decision, call.config)
    telemetry.decided(record)
    entry: EffectRecord = {
        **call.entry,
        "answered": [*call.entry.get("answered", []), question],
        "decision": record,
    }
    if decision["action"] == "reject":
        reason = decision.get("reason") or "no reason given"
        content = json.dumps(
            {
                "error": f"a person rejected this call of {tool}: {reason}",
                "retryable": False,
                "suggestion": "do not call it again with the same arguments; answer "
                "without it, or take the reason into account",
            }
        )
        await call.save(_finished(entry, "rejected", content, "error"))
        return content, "error"
    entry = {**entry, "state": "approved", "args": decision.get("args", args)}
    entry["approved_at"] = time.time()
    # Recorded before the call runs: an approval is never asked for twice.
    await call.save(entry)
    return None


async def _execute(
    call: _LedgerCall, run: Callable[[dict[str, Any]], Awaitable[Outcome]]
) -> Outcome:
    """Record the call as started, run it, record how it ended."""
    entry: EffectRecord = {**call.entry, "state": "started", "started_at": time.time()}
    await call.save(entry)
    token = _current_key.set(entry["idempotency_key"])
    try:
        content, status = await run(entry["args"])
    finally:
        _current_key.reset(token)
    await call.save(
        _finished(entry, "completed" if status == "success" else "failed", content, status)
    )
    return content, status


async def records(store: Any, thread_id: str) -> dict[str, EffectRecord]:
    """Every entry of `thread_id`'s effect ledger, by ledger key (the one reader of it)."""
    found = await store.asearch(thread_namespace(NAMESPACE, thread_id), limit=10_000)
    return {item.key: cast(EffectRecord, item.value) for item in found}


async def decisions(store: Any, thread_id: str) -> list[dict[str, Any]]:
    """The approval decisions `thread_id`'s ledger keeps, oldest first.

    Each names the tool and the agent that asked, what was decided (`action`, a rejection's
    `reason`), who decided (`by`), which way in (`via`: cli, python, server) and when (`at`).
    """
    made = [
        {"tool": entry.get("tool", ""), "agent": entry.get("agent", ""), **decision}
        for entry in (await records(store, thread_id)).values()
        if isinstance(decision := entry.get("decision"), dict)
    ]
    return sorted(made, key=lambda decision: decision.get("at", 0.0))


async def decided_calls(store: Any, thread_id: str) -> set[str]:
    """The ledger keys of `thread_id`'s calls whose approval a person has already answered.

    After a kill, the thread's checkpoint still shows the approval question its step last
    stopped at; the ledger knows it was answered, so it no longer waits for anyone.
    """
    return {
        key
        for key, entry in (await records(store, thread_id)).items()
        if any(q.get("type") == APPROVAL for q in entry.get("answered", []))
    }


def _finished(
    entry: EffectRecord,
    state: EffectState,
    content: str,
    status: Literal["success", "error"],
) -> EffectRecord:
    return {
        **entry,
        "state": state,
        "content": content,
        "status": status,
        "finished_at": time.time(),
    }


def _plain(args: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(args, default=str))


def _refused(tool: str, why: str) -> Outcome:
    return (
        json.dumps(
            {
                "error": f"{tool} was not run: {why}",
                "retryable": False,
                "suggestion": "do without it, or run it through a Quorum run",
            }
        ),
        "error",
    )
