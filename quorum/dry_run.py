"""What a resume would do, said before it runs: `quorum resume --dry-run`, `quorum.preview()`.

`preview(thread_id, ...)` reads a thread the way `quorum show` does (its database opened
only to read; no model, tool or endpoint is called, no row is written) and says what
`quorum.resume` with the same arguments would do:

- which checkpoint it continues from (with `checkpoint_id`, the fork point);
- for every pending step: replayed from the checkpoint (it finished before the stop: its
  saved writes are applied, it does not run), run again with the journal serving the
  replies it had already received (how many calls, tokens and cost are not spent again),
  run anew (the journal has nothing for it: every call goes to the model), or waiting for a
  person;
- what waits for a person (approvals, side effects of unknown outcome) with the commands
  that answer it, and the failed steps whose replies will be asked for again;
- the run's and each agent's budgets under the settings the resume would use;
- the lease: free, or who holds it;
- a verdict: `proceeds`, `waits`, `busy`, `completed` or `stopped`.

Why the counts are exact: a model call is journaled under its task's checkpoint namespace
(which ends in the task id) and a digest of its request (`quorum.journal`). A step that runs
again from the same checkpoint has the same task id and, within the task, the same requests
as long as it gets the same replies, which the journal gives it; so every reply recorded
under a re-run task (and not marked rejected) is served, in order, and nothing else is. In
a subgraph (an orchestrator worker, a pipeline stage) only its pending inner steps run again:
the inner steps it had finished are in its own checkpoints. Two things the journal cannot
see make the count an upper bound instead (`Preview.exact` is then False and a note says
why): settings changed for the resume that go into requests (the model, temperature,
prompts' limits; budgets and `approve_tools` do not), and a fork from a checkpoint an
update wrote (its tasks keep their ids there). Another model set in the environment
(QUORUM_MODEL) is not seen either.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from langgraph.types import StateSnapshot

from quorum import journal, metering, threads
from quorum.checkpoints import Persistence, shared_persistence
from quorum.checkpoints.lease import Lease
from quorum.context import QuorumContext
from quorum.effects import APPROVAL, RECONCILE, Question
from quorum.errors import UsageError
from quorum.framework import PREGEL_PUSH, PREGEL_TASKS
from quorum.lifecycle import thread_config
from quorum.outcome import Status, cancelled
from quorum.settings import redact
from quorum.state import step_label

JSON_VERSION = 1
"""The version of `Preview.to_json()`'s form: raised when a key changes meaning or goes."""

Verdict = Literal["proceeds", "waits", "busy", "completed", "stopped"]
"""What a resume would do. `proceeds`: it would run. `waits`: it waits for a person (an
approval or a side effect of unknown outcome) and would do nothing until answered. `busy`:
a live run holds the thread's lease; a resume stops at once. `completed`: the thread is
finished; nothing runs. `stopped`: it ended at its step limit and the settings give no more
steps; nothing runs."""

EXIT_CODES: dict[Verdict, int] = {
    "proceeds": 0,
    "completed": 0,
    "busy": 3,
    "stopped": 4,
    "waits": 5,
}
"""The exit code of `quorum resume --dry-run` by verdict (as `quorum resume` would end)."""

Fate = Literal["replayed", "journal", "anew", "waits"]
"""What happens to a pending step. `replayed`: it finished before the stop; its writes are
in the checkpoint (a subgraph's: in its own last checkpoint) and are applied without any
call. `journal`: it runs again and the
journal serves its first `served_calls` calls (any later call goes to the model). `anew`: it
runs and every call it makes goes to the model. `waits`: it waits for a person's answer."""

BudgetName = Literal["max_tokens", "max_cost_usd", "max_model_calls", "max_seconds"]

SAFE_SETTINGS = frozenset(
    {"max_tokens", "max_cost_usd", "max_model_calls", "max_seconds", "agent_budgets"}
    | {"approve_tools"}
)
"""Settings a resume may change without changing any request an agent sends (so the journal
still serves every recorded reply): budgets are checked around requests, never sent, and
`approve_tools` decides who answers an approval."""

_SENDS = PREGEL_TASKS
"""Where a LangGraph checkpoint keeps the `Send` packets its next step runs (a push task's
path indexes them). No public API gives a pending task's input; it names the step ('researcher
(s2)', 'tool calculator'), and `tests/test_preview.py` fails if the name stops working."""


@dataclass(frozen=True)
class CheckpointRef:
    """One checkpoint of the thread."""

    checkpoint_id: str
    step: int
    """The step its agents run as, numbered as `quorum show --history` does."""
    created_at: str
    source: str
    """How LangGraph wrote it: input, loop, update or fork."""


@dataclass(frozen=True)
class StepPreview:
    """One pending step (a LangGraph task) and what the resume does with it."""

    task_id: str
    name: str
    """The graph node: planner, worker, act, tool, debater_a, ..."""
    agent: str
    """Whose step it is: the agent (researcher, judge, agent) or, for a tool call, its tool."""
    label: str
    """How progress names it: 'researcher (s2)', 'tool calculator', 'synthesizer'."""
    within: str
    """The step of the outer graph it runs inside ('researcher (s2)' for a worker's turn);
    empty at the top."""
    namespace: str
    """Its checkpoint namespace, which ends in its task id: its journal entries' key prefix."""
    fate: Fate
    served_calls: int = 0
    """Model calls the journal serves when it runs again: requests not sent."""
    served_tokens: int = 0
    """Input plus output tokens of those calls: not spent again."""
    served_cost_usd: float = 0.0
    """Their cost: not spent again."""
    asked_again: int = 0
    """Calls journaled for it without a reply it can use (marked rejected: the step failed
    because of them; or every attempt failed): they are requested again."""
    error: str | None = None
    """Why it stopped, if it failed (redacted); a cancelled sibling has none."""


@dataclass(frozen=True)
class WaitingPreview:
    """A question the thread waits on, and how to answer it."""

    type: Literal["approval", "needs_reconciliation"]
    tool: str
    args: dict[str, Any]
    agent: str
    call_id: str
    question: str
    commands: tuple[str, ...]
    """The `quorum` commands that answer it (then the thread goes on)."""


@dataclass(frozen=True)
class BudgetPreview:
    """One budget under the settings the resume would use."""

    scope: str
    """'run', or the agent an `agent_budgets` entry limits."""
    name: BudgetName
    limit: float
    used: float
    """Spent by the thread so far: every answered call in its journal (the resume's meter
    starts from the same), or seconds run so far."""
    left: float
    exhausted: bool
    """Nothing left: the resume stops again at its first new request (journal-served calls
    still run); give more with `--set`."""


@dataclass(frozen=True)
class LeasePreview:
    """Who holds the thread."""

    free: bool
    holder: str = ""
    """host:pid:nonce of the run holding it, when it is not free."""
    expires_in: float = 0.0
    """Seconds until the lease runs out unless renewed."""
    description: str = ""


@dataclass(frozen=True)
class Preview:
    """What `quorum.resume` would do with a thread, read without changing anything."""

    thread_id: str
    pattern: str
    status: Status
    """The thread's status now (`running` while a live run holds it)."""
    verdict: Verdict
    reason: str
    """The verdict in a sentence, for a person."""
    checkpoint: CheckpointRef
    """The checkpoint the resume continues from (the fork point, with `checkpoint_id`)."""
    fork: bool
    """Whether it forks from an earlier checkpoint (`--from`) instead of continuing."""
    steps: tuple[StepPreview, ...]
    """Every pending step, inner steps of subgraphs in place of the step running them."""
    waiting: tuple[WaitingPreview, ...]
    budgets: tuple[BudgetPreview, ...]
    lease: LeasePreview
    settings: dict[str, Any]
    """The settings changed for the resume (`--set`)."""
    recorded_calls: int
    """Answered calls in the thread's journal, rejected ones aside: paid for already, each
    either in a step replayed from the checkpoint or served by the journal."""
    exact: bool = True
    """Whether `served_calls` is exact; False when something the journal cannot see may
    change requests (`notes` says what): then it is an upper bound."""
    notes: tuple[str, ...] = ()
    model: str = ""
    """The default model the resume would use ('' means QUORUM_MODEL's)."""

    @property
    def served_calls(self) -> int:
        """Model calls the journal serves: requests the resume does not send."""
        return sum(s.served_calls for s in self.steps)

    @property
    def served_tokens(self) -> int:
        """Tokens of those calls, not spent again."""
        return sum(s.served_tokens for s in self.steps)

    @property
    def served_cost_usd(self) -> float:
        """Cost of those calls, not spent again."""
        return sum(s.served_cost_usd for s in self.steps)

    @property
    def failed(self) -> tuple[StepPreview, ...]:
        """Steps that failed: they run again, asking for their rejected replies anew."""
        return tuple(s for s in self.steps if s.error)

    @property
    def exit_code(self) -> int:
        """What `quorum resume --dry-run` exits with (`EXIT_CODES`)."""
        return EXIT_CODES[self.verdict]

    def to_json(self) -> dict[str, Any]:
        """The preview as plain JSON data, the form `--dry-run --json` prints.

        Keys (stable within `version`; each record's keys are its class's fields, documented
        there):

        - `version`: `JSON_VERSION`;
        - `thread_id`, `pattern`, `status` (the thread's, `quorum show`'s), `verdict`
          (`Verdict`), `reason` (a sentence), `exit_code`;
        - `checkpoint`: `CheckpointRef` (checkpoint_id, step, created_at, source), and `fork`;
        - `steps`: a `StepPreview` per pending step (task_id, name, agent, label, within,
          namespace, fate, served_calls, served_tokens, served_cost_usd, asked_again,
          error);
        - `journal`: totals: `recorded_calls`, `served_calls`, `served_tokens`,
          `served_cost_usd`, `asked_again`, `steps_replayed`, `steps_served` (fate
          journal), `steps_anew`, `exact`;
        - `waiting`: a `WaitingPreview` each (type, tool, args, agent, call_id, question,
          commands);
        - `failed`: the `label`, `error` and `asked_again` of each failed step;
        - `budgets`: a `BudgetPreview` each (scope, name, limit, used, left, exhausted);
        - `lease`: `LeasePreview` (free, holder, expires_in, description);
        - `settings` (the changed ones), `model`, `notes`.
        """
        data: dict[str, Any] = {
            "version": JSON_VERSION,
            "thread_id": self.thread_id,
            "pattern": self.pattern,
            "status": self.status,
            "verdict": self.verdict,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "checkpoint": asdict(self.checkpoint),
            "fork": self.fork,
            "steps": [asdict(s) for s in self.steps],
            "journal": self._journal_totals(),
            "waiting": [asdict(w) for w in self.waiting],
            "failed": [
                {"label": s.label, "error": s.error, "asked_again": s.asked_again}
                for s in self.failed
            ],
            "budgets": [asdict(b) for b in self.budgets],
            "lease": asdict(self.lease),
            "settings": self.settings,
            "model": self.model,
            "notes": list(self.notes),
        }
        # Tuples (commands) as lists, everything as JSON has it.
        plain: dict[str, Any] = json.loads(json.dumps(data, default=str))
        return plain

    def _journal_totals(self) -> dict[str, Any]:
        """The `journal` key of `to_json`."""

        def fate(which: Fate) -> int:
            return sum(1 for s in self.steps if s.fate == which)

        return {
            "recorded_calls": self.recorded_calls,
            "served_calls": self.served_calls,
            "served_tokens": self.served_tokens,
            "served_cost_usd": round(self.served_cost_usd, 6),
            "asked_again": sum(s.asked_again for s in self.steps),
            "steps_replayed": fate("replayed"),
            "steps_served": fate("journal"),
            "steps_anew": fate("anew"),
            "exact": self.exact,
        }


async def preview(
    thread_id: str,
    *,
    database: str | None = None,
    settings: dict[str, Any] | None = None,
    checkpoint_id: str | None = None,
) -> Preview:
    """What `quorum.resume(thread_id, settings=..., checkpoint_id=...)` would do, unrun.

    Reads the thread's checkpoints, journal, effect ledger and lease from `database` opened
    only to read: no model, tool or endpoint is called and nothing is written. Raises
    `ThreadNotFound`, `NoDatabase` or `UsageError` (bad settings, an unknown or ambiguous
    checkpoint, or one the thread ended at) as `resume` would.
    """
    async with shared_persistence(database, read_only=True, thread_id=thread_id) as kept:
        lease = await kept.leases.get(thread_id)
        info = await threads.thread_info(kept, thread_id, lease=lease)
        graph = threads.compile_pattern(kept, info.pattern)
        records = await journal.keyed_records(kept.store, thread_id)
        found, snapshot, steps, notes = await _pending_steps(
            kept, graph, info, checkpoint_id, records
        )
        metadata = dict(found.metadata or {})
        context = await threads.stored_context(kept, thread_id, settings, metadata)
        changing = sorted(set(settings or {}) - SAFE_SETTINGS)
        if changing and any(s.served_calls for s in steps):
            notes.append(
                f"changed settings ({', '.join(changing)}) may change what agents send: "
                "the journal then serves fewer calls than counted"
            )
        verdict, reason = _verdict(info, lease, context, checkpoint_id is not None)
        if verdict == "proceeds" and info.status == "step_limit" and checkpoint_id is None:
            # The resume writes a checkpoint that hands the agent its turn back: a new task.
            steps.append(StepPreview("", "agent", "agent", "agent", "", "", "anew"))
        budgets = _budgets(context, records)
        if verdict == "proceeds" and (spent := [b for b in budgets if b.exhausted]):
            used_up = ", ".join(f"{b.scope} {b.name}" for b in spent)
            reason += f"; but {used_up} is used up: it stops again at its first new request"
        return Preview(
            thread_id=thread_id,
            pattern=info.pattern,
            status=info.status,
            verdict=verdict,
            reason=reason,
            checkpoint=_checkpoint_ref(found, snapshot),
            fork=checkpoint_id is not None,
            steps=tuple(steps),
            waiting=tuple(_waiting(thread_id, info.waiting)),
            budgets=tuple(budgets),
            lease=_lease(lease),
            settings=dict(settings or {}),
            recorded_calls=sum(1 for _, r in records if r.reply is not None and not r.rejected),
            exact=not notes,
            notes=tuple(notes),
            model=context.model,
        )


async def _pending_steps(
    kept: Persistence,
    graph: Any,
    info: threads.ThreadInfo,
    checkpoint_id: str | None,
    records: Sequence[tuple[str, journal.CallRecord]],
) -> tuple[Any, StateSnapshot, list[StepPreview], list[str]]:
    """Where a resume (or a fork from `checkpoint_id`) starts, and the steps it runs.

    Returns the checkpoint, its state, the steps, and notes on why the journal's count may
    not be exact.
    """
    thread_id = info.thread_id
    notes: list[str] = []
    if checkpoint_id is None:
        found = await kept.saver.aget_tuple(thread_config(thread_id))
        assert found is not None  # the thread exists: thread_info found its checkpoint
        snapshot = await graph.aget_state(thread_config(thread_id), subgraphs=True)
        waiting_ids = {w["interrupt_id"] for w in info.waiting}
        return found, snapshot, await _steps(kept, snapshot, records, waiting_ids, ""), notes
    found, snapshot = await _fork_point(kept, graph, thread_id, checkpoint_id)
    steps, kept_ids = await _fork_steps(kept, thread_id, found, snapshot, records)
    if kept_ids:
        notes.append(
            "the fork starts at the thread's latest checkpoint, written by an update: "
            "its steps keep their task ids, so the journal may serve some of their calls"
        )
    return found, snapshot, steps, notes


def _id(found: Any) -> str:
    return str(found.config["configurable"]["checkpoint_id"])


async def _fork_point(
    kept: Persistence, graph: Any, thread_id: str, checkpoint_id: str
) -> tuple[Any, StateSnapshot]:
    """The checkpoint a fork would run from, and its state; refused if the thread ended there."""
    found = await threads.find_checkpoint(kept, thread_id, checkpoint_id)
    snapshot = await graph.aget_state(found.config, subgraphs=True)
    if not snapshot.next:
        raise UsageError(
            f"thread {thread_id!r} ended at checkpoint {_id(found)}: no fork runs from it",
            hint=f"`quorum show {thread_id} --history` lists the earlier ones",
        )
    return found, snapshot


def _checkpoint_ref(found: Any, snapshot: StateSnapshot) -> CheckpointRef:
    """The checkpoint a resume continues from, as the preview names it."""
    metadata = found.metadata or {}
    return CheckpointRef(
        checkpoint_id=_id(found),
        step=int(metadata.get("step", -1)) + 1,
        created_at=str(snapshot.created_at or ""),
        source=str(metadata.get("source", "")),
    )


async def _steps(
    kept: Persistence,
    snapshot: StateSnapshot,
    records: Sequence[tuple[str, journal.CallRecord]],
    waiting_ids: set[str],
    within: str,
) -> list[StepPreview]:
    """The pending steps of `snapshot` (a graph or a subgraph), innermost where they run."""
    namespace = str(snapshot.config["configurable"].get("checkpoint_ns", ""))
    sends = await _sends(kept, snapshot)
    inner_agent = str(snapshot.values.get("agent", "")) if within else ""
    steps: list[StepPreview] = []
    for task in snapshot.tasks:
        if task.name == "__start__":
            continue  # the input being applied: not a step of any agent
        label, agent = _named(task.name, _payload(task.path, sends), inner_agent)
        mine = f"{namespace}|{task.name}:{task.id}" if namespace else f"{task.name}:{task.id}"
        inside = task.state if isinstance(task.state, StateSnapshot) else None
        if task.result is None and inside is not None:
            # A subgraph with checkpoints of its own: its finished inner steps are kept
            # there, and only its pending ones run again.
            inner = await _steps(kept, inside, records, waiting_ids, label)
            if inner:
                steps += inner
                continue
        if task.result is not None or (inside is not None and not inside.next):
            # Finished before the stop: its result is in the checkpoint, or a subgraph's in
            # its own last checkpoint (a kill between the two saves), read back without a call.
            steps.append(StepPreview(task.id, task.name, agent, label, within, mine, "replayed"))
            continue
        steps.append(_pending(task, agent, label, within, mine, records, waiting_ids))
    return steps


def _pending(
    task: Any,
    agent: str,
    label: str,
    within: str,
    namespace: str,
    records: Sequence[tuple[str, journal.CallRecord]],
    waiting_ids: set[str],
) -> StepPreview:
    """A step that runs again: what its journal entries give it, and why it stopped."""
    own = [r for key, r in records if _belongs(key, namespace)]
    served = [r for r in own if r.reply is not None and not r.rejected]
    waits = any(i.id in waiting_ids for i in task.interrupts)
    error = task.error if task.error and not cancelled(task.error) else None
    return StepPreview(
        task_id=task.id,
        name=task.name,
        agent=agent,
        label=label,
        within=within,
        namespace=namespace,
        fate="waits" if waits else "journal" if served else "anew",
        served_calls=len(served),
        served_tokens=sum(r.input_tokens + r.output_tokens for r in served),
        served_cost_usd=sum((r.cost_usd for r in served), 0.0),
        asked_again=len(own) - len(served),
        error=redact(str(error)) if error is not None else None,
    )


async def _fork_steps(
    kept: Persistence,
    thread_id: str,
    found: Any,
    snapshot: StateSnapshot,
    records: Sequence[tuple[str, journal.CallRecord]],
) -> tuple[list[StepPreview], bool]:
    """The steps a fork from `found` runs, and whether they keep their task ids.

    A fork runs every step of its checkpoint, finished ones too. LangGraph starts it with
    a checkpoint of its own, so its tasks get new ids and nothing of the journal's is theirs;
    only at the thread's latest checkpoint, when an update or a fork wrote it, does it run
    the tasks there as they are (LangGraph's time travel, `pregel/_loop.py`).
    """
    latest = await kept.saver.aget_tuple(thread_config(thread_id))
    source = (found.metadata or {}).get("source")
    kept_ids = source in ("update", "fork") and latest is not None and _id(latest) == _id(found)
    sends = await _sends(kept, snapshot)
    steps = []
    for task in snapshot.tasks:
        if task.name == "__start__":
            continue
        label, agent = _named(task.name, _payload(task.path, sends), "")
        mine = f"{task.name}:{task.id}"
        if kept_ids:
            steps.append(_pending(task, agent, label, "", mine, records, set()))
        else:
            steps.append(StepPreview(task.id, task.name, agent, label, "", mine, "anew"))
    return steps, kept_ids


def _belongs(key: str, namespace: str) -> bool:
    """Whether the journal key `namespace#digest` is a call of the task `namespace`.

    A subgraph running inside the task journals under namespaces that start with its own.
    """
    called_in = key.rpartition("#")[0]
    return called_in == namespace or called_in.startswith(namespace + "|")


async def _sends(kept: Persistence, snapshot: StateSnapshot) -> list[Any]:
    """The `Send` packets of the step `snapshot` runs (see `_SENDS`)."""
    found = await kept.saver.aget_tuple(snapshot.config)
    if found is None:
        return []
    sends = found.checkpoint.get("channel_values", {}).get(_SENDS, [])
    return list(sends) if isinstance(sends, list) else []


def _payload(path: tuple[Any, ...], sends: list[Any]) -> Any:
    """The input a push task (one `Send`) was sent; None for any other task."""
    if len(path) >= 2 and path[0] == PREGEL_PUSH and isinstance(path[1], int):
        if path[1] < len(sends):
            return getattr(sends[path[1]], "arg", None)
    return None


def _named(name: str, payload: Any, inner_agent: str) -> tuple[str, str]:
    """(label, agent) of a step, as the run's progress names it."""
    label = step_label(payload)
    if label is not None:
        # Whose step: the worker sent a plan step, or the tool called.
        who = payload["worker"] if "worker" in payload else payload["call"].get("name", "?")
        return label, str(who)
    agent = inner_agent or name
    return (f"{agent} {name}" if inner_agent and inner_agent != name else name), agent


def _verdict(
    info: threads.ThreadInfo, lease: Lease | None, context: QuorumContext, fork: bool
) -> tuple[Verdict, str]:
    """The verdict and its sentence, following the branches `runner.resume` takes."""
    if lease is not None and lease.live:
        return "busy", f"a run holds the thread: {lease.describe()}"
    if fork:
        return "proceeds", "a fork runs on from the checkpoint as a new branch"
    if info.status == "completed":
        return "completed", "the thread is finished: nothing runs"
    if info.waiting:
        kinds = {w["type"] for w in info.waiting}
        what = [
            text
            for kind, text in (
                (APPROVAL, "tool calls to approve"),
                (RECONCILE, "side effects of unknown outcome"),
            )
            if kind in kinds
        ]
        return "waits", f"it waits for a person to decide {' and '.join(what)}"
    if info.status == "step_limit":
        steps = int(info.values.get("steps", 0))
        if context.max_steps <= steps:
            return "stopped", (
                f"it ended at its step limit ({steps} steps): give more with "
                f"--set max_steps={steps + 1} or higher"
            )
        return "proceeds", f"the agent takes another turn (max_steps {context.max_steps})"
    return "proceeds", f"the {info.status} thread runs on from its last checkpoint"


def _waiting(thread_id: str, waiting: Sequence[Question]) -> list[WaitingPreview]:
    """The thread's questions, each with the commands that answer it."""
    found = []
    for w in waiting:
        call = w.get("call_id", "")
        if w["type"] == APPROVAL:
            commands: tuple[str, ...] = (
                f"quorum approve {thread_id} --call {call}",
                f"quorum approve {thread_id} --call {call} --reject --reason TEXT",
                f"quorum approve {thread_id} --call {call} --edit JSON",
            )
        else:
            commands = (f"quorum resolve {thread_id} done", f"quorum resolve {thread_id} retry")
        found.append(
            WaitingPreview(
                type=w["type"],
                tool=str(w.get("tool", "")),
                args=dict(w.get("args") or {}),
                agent=str(w.get("agent", "")),
                call_id=str(call),
                question=str(w.get("question", "")),
                commands=commands,
            )
        )
    return found


def _budgets(
    context: QuorumContext, records: Sequence[tuple[str, journal.CallRecord]]
) -> list[BudgetPreview]:
    """Every budget the resume runs under, with what the thread has spent of it."""
    # The resume's meter starts the same way (`metering.run_meter`): every answered call in
    # the journal, and the longest any run of the thread has taken.
    meter = metering.RunMeter()
    for _, call in records:
        if call.reply is not None:
            meter.add(call.agent, call)
            meter.seconds_before = max(meter.seconds_before, call.run_seconds)
    meter.started = time.monotonic()
    lines: list[BudgetPreview] = []
    scopes: list[tuple[str, str, Any]] = [("run", "", context)]
    scopes += [(agent, "agent_", budget) for agent, budget in context.agent_budgets.items()]
    for scope, prefix, budget in scopes:
        left = meter.left("" if scope == "run" else scope, context)
        names: list[BudgetName] = ["max_tokens", "max_cost_usd", "max_model_calls"]
        names += ["max_seconds"] if scope == "run" else []
        for name in names:
            key = name if name == "max_seconds" else prefix + name
            if key not in left:
                continue
            limit = float(getattr(budget, name))
            lines.append(
                BudgetPreview(
                    scope=scope,
                    name=name,
                    limit=limit,
                    used=round(limit - left[key], 6),
                    left=float(left[key]),
                    exhausted=left[key] <= 0,
                )
            )
    return lines


def _lease(lease: Lease | None) -> LeasePreview:
    if lease is None or not lease.live:
        return LeasePreview(free=True)
    return LeasePreview(
        free=False,
        holder=lease.holder,
        expires_in=round(max(lease.expires_at - time.time(), 0.0), 1),
        description=lease.describe(),
    )
