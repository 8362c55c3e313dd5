"""Usage, cost and budgets, metered where the model is called.

The model seam reports every call here. Two views are kept:

- per agent step: a node wired as an agent (`AgentGraph.add_agent`, which wraps it in
  `metered`) hands what its calls spent (replayed from the journal or answered now) to the
  checkpoint as the state's `usage`, once, when it finishes: no node counts usage by hand,
  and a call is counted once however many times its task runs;
- per run: a `RunMeter` per thread totals what the whole run has spent so far (seeded from
  the thread's call journal, so a resume neither resets nor double counts), shared by
  parallel workers, and checked before every new request against the run's budgets
  (`max_tokens`, `max_cost_usd`, `max_model_calls`, `max_seconds`, `agent_budgets`) with
  an estimate of the request's input, and after it with what it really spent. A budget that
  runs out raises `BudgetExceeded`: the step stops, the thread keeps every finished step,
  and a resume with a larger budget continues it.

The ledger (`Ledger`) is the thread's account of it all, built from the call journal alone:
calls, tokens, cost, latency (total, p50, p95), attempts and errors, per agent and per run.

Cost comes from a price table: a JSON file named by QUORUM_PRICES for your own models, then
the genai-prices package for OpenAI's; models on any other endpoint cost 0 unless priced.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from langchain_core.messages import BaseMessage
from langgraph.store.base import BaseStore
from langgraph.types import Command

from quorum import journal, telemetry
from quorum.context import QuorumContext
from quorum.errors import BudgetExceeded, ConfigError, InvalidReply, PlanError
from quorum.settings import Settings
from quorum.state import Usage, add_usage

logger = logging.getLogger(__name__)

_spent: ContextVar[dict[str, Usage] | None] = ContextVar("quorum_spent", default=None)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def record(agent: str, call: journal.CallRecord) -> None:
    """Count one answered model call of `agent` toward the running node's usage."""
    spent = _spent.get()
    if spent is None:
        return  # a call outside a metered node (a user calling `ask` directly)
    usage = Usage(
        calls=1,
        input_tokens=call.input_tokens,
        output_tokens=call.output_tokens,
        attempts=call.attempts,
        cost_usd=call.cost_usd,
        seconds=call.seconds,
    )
    spent.update(add_usage(spent, {agent: usage}))


def metered(node: F) -> F:
    """Make `node` report the usage of every model call it makes in its `usage` update.

    Each run of the node is also an agent step in the traces (`quorum.telemetry`), named by
    the state's `label` (a worker's agent and plan step) or its agent.
    """

    @functools.wraps(node)
    async def run(*args: Any, **kwargs: Any) -> Any:
        spent: dict[str, Usage] = {}
        state = args[0] if args and isinstance(args[0], dict) else {}
        agent = str(state.get("agent") or node.__name__)
        token = _spent.set(spent)
        try:
            with (
                telemetry.agent_span(agent, state.get("label") or agent) as span,
                journal.step_calls() as calls,
            ):
                try:
                    update = await node(*args, **kwargs)
                except (InvalidReply, PlanError):
                    # The step failed because of its replies: a resume must ask again, not
                    # replay them into the same failure.
                    await journal.reject(calls)
                    raise
                telemetry.ended_step(span, spent)
        finally:
            _spent.reset(token)
        if not spent:
            return update
        if isinstance(update, Command):
            values = dict(update.update or {})
            values["usage"] = add_usage(values.get("usage"), spent)
            return Command(
                graph=update.graph, update=values, resume=update.resume, goto=update.goto
            )
        return {**(update or {}), "usage": add_usage((update or {}).get("usage"), spent)}

    return run  # type: ignore[return-value]


# --- Cost --------------------------------------------------------------------------------------


def cost_usd(settings: Settings, model: str, input_tokens: int, output_tokens: int) -> float:
    """What a call to `model` with these tokens cost, in US dollars."""
    table = _price_table(settings.prices_file)
    if model in table:
        price = table[model]
        return (
            input_tokens * price.get("input_per_mtok", 0.0)
            + output_tokens * price.get("output_per_mtok", 0.0)
        ) / 1e6
    if settings.base_url is not None and "api.openai.com" not in settings.base_url:
        return 0.0  # a self-hosted or third-party server: priced only by the table
    if settings.base_url is None and settings.api_key is None:
        return 0.0  # the embedded model
    return _genai_price(model, input_tokens, output_tokens)


@functools.lru_cache(maxsize=8)
def _price_table(path: Any) -> dict[str, dict[str, float]]:
    if path is None:
        return {}
    try:
        table = json.loads(path.read_text())
        return {
            str(model): {k: float(v) for k, v in prices.items()} for model, prices in table.items()
        }
    except (OSError, ValueError, AttributeError, TypeError) as error:
        raise ConfigError(
            f"cannot read the price table {str(path)!r}: {error}",
            hint='QUORUM_PRICES names a JSON file: {"my-model": {"input_per_mtok": 0.2, '
            '"output_per_mtok": 0.6}} (US dollars per million tokens)',
        ) from error


@functools.lru_cache(maxsize=256)
def _genai_price(model: str, input_tokens: int, output_tokens: int) -> float:
    from genai_prices import Usage as PriceUsage
    from genai_prices import calc_price

    try:
        price = calc_price(
            PriceUsage(input_tokens=input_tokens, output_tokens=output_tokens),
            model_ref=model,
            provider_id="openai",
        )
    except LookupError:
        logger.warning("no price known for model %r: its calls count as free", model)
        return 0.0
    return float(Decimal(price.total_price))


# --- Budgets -----------------------------------------------------------------------------------


@dataclass
class Spent:
    """What a run, or one agent in it, has spent."""

    calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0

    def add(self, call: journal.CallRecord) -> None:
        """Count an answered call."""
        self.calls += 1
        self.tokens += call.input_tokens + call.output_tokens
        self.cost_usd += call.cost_usd

    def __add__(self, other: Spent) -> Spent:
        return Spent(
            self.calls + other.calls, self.tokens + other.tokens, self.cost_usd + other.cost_usd
        )


@dataclass(frozen=True)
class Reservation:
    """One call in flight, held against the budgets until its reply is counted."""

    agent: str
    spent: Spent


@dataclass
class RunMeter:
    """What one run of a thread has spent so far, across every process that ran it."""

    total: Spent = field(default_factory=Spent)
    agents: dict[str, Spent] = field(default_factory=dict)
    in_flight: list[Reservation] = field(default_factory=list)
    """Calls sent and not answered yet: parallel workers' calls count before they return."""
    seconds_before: float = 0.0
    """Seconds earlier runs of the thread took (time with no process running is not counted)."""
    started: float = field(default_factory=time.monotonic)
    journaled: set[str] | None = None
    """The journal keys of the thread when the meter was seeded, and the calls this run has
    made since; None when unknown (a call in no run). While a run lives nothing else writes
    its thread's journal (its lease fences every other writer), so a call whose key is not
    here has no record to read."""

    def may_be_journaled(self, key: str) -> bool:
        """Whether the journal may hold `key`: False only when it surely does not."""
        return self.journaled is None or key in self.journaled

    def journaling(self, key: str) -> None:
        """Note that the run is about to journal a call under `key` (its attempts, its reply)."""
        if self.journaled is not None:
            self.journaled.add(key)

    @property
    def seconds(self) -> float:
        """Seconds the run has taken so far."""
        return self.seconds_before + time.monotonic() - self.started

    def add(self, agent: str, call: journal.CallRecord) -> None:
        """Count a call answered in this run."""
        self.total.add(call)
        self.agents.setdefault(agent, Spent()).add(call)

    def left(self, agent: str, context: QuorumContext) -> dict[str, float]:
        """What is left of each budget the run (and `agent`) has, by budget name."""
        left: dict[str, float] = {}
        budgets: list[tuple[str, Spent, Any]] = [("", self.total, context)]
        if agent in context.agent_budgets:
            budgets.append(
                ("agent_", self.agents.get(agent, Spent()), context.agent_budgets[agent])
            )
        for prefix, spent, budget in budgets:
            for name, used in (
                ("max_tokens", spent.tokens),
                ("max_cost_usd", spent.cost_usd),
                ("max_model_calls", spent.calls),
            ):
                if (limit := getattr(budget, name)) is not None:
                    left[prefix + name] = round(limit - used, 6)
        if context.max_seconds is not None:
            left["max_seconds"] = round(context.max_seconds - self.seconds, 3)
        return left

    def reserve(
        self, agent: str, context: QuorumContext, *, estimate: int = 0, cost: float = 0.0
    ) -> Reservation:
        """Hold one call of `agent` against the budgets, or raise `BudgetExceeded`.

        The call counts, with its `estimate`d input tokens and their `cost`, from now until
        `settle`: checked and held with no await between, so parallel workers sharing the
        run's meter can never send more calls together than `max_model_calls` allows.
        """
        held = Reservation(agent, Spent(1, estimate, cost))
        self._check(agent, context, held)
        self.in_flight.append(held)
        return held

    def settle(self, held: Reservation, call: journal.CallRecord | None) -> None:
        """End a reservation: count the answered `call` in its place (None: it failed)."""
        self.in_flight.remove(held)
        if call is not None:
            self.add(held.agent, call)

    def check(self, agent: str, context: QuorumContext) -> None:
        """Raise `BudgetExceeded` if the run (or `agent`) has gone over a budget."""
        self._check(agent, context, None)

    def _check(self, agent: str, context: QuorumContext, held: Reservation | None) -> None:
        # Before a call, the calls in flight count as spent; after one, only what was.
        counted = self.in_flight if held is not None else []
        mine = [r.spent for r in counted if r.agent == agent]
        flying = sum((r.spent for r in counted), Spent())
        limits: list[tuple[str | None, Spent, Any]] = [(None, self.total + flying, context)]
        if agent in context.agent_budgets:
            own = sum(mine, self.agents.get(agent, Spent()))
            limits.append((agent, own, context.agent_budgets[agent]))
        more = held.spent if held is not None else Spent()
        for who, spent, budget in limits:
            calls, tokens, cost = budget.max_model_calls, budget.max_tokens, budget.max_cost_usd
            if calls is not None and spent.calls + more.calls > calls:
                raise _exceeded(who, "max_model_calls", calls, spent.calls, "calls")
            if tokens is not None and spent.tokens + more.tokens > tokens:
                extra = f" (+{more.tokens} estimated for the next call)" if held else ""
                raise _exceeded(who, "max_tokens", tokens, spent.tokens, "tokens", extra=extra)
            if cost is not None and spent.cost_usd + more.cost_usd > cost:
                extra = f" (+${more.cost_usd:.6f} estimated for the next call)" if held else ""
                raise _exceeded(
                    who, "max_cost_usd", cost, round(spent.cost_usd, 6), "USD", extra=extra
                )
        if context.max_seconds is not None and self.seconds > context.max_seconds:
            raise _exceeded(None, "max_seconds", context.max_seconds, round(self.seconds, 1), "s")


def _exceeded(
    agent: str | None, name: str, limit: float, spent: float, unit: str, *, extra: str = ""
) -> BudgetExceeded:
    who = f"agent '{agent}'" if agent else "run"
    setting = f"""'agent_budgets={{"{agent}": {{"{name}": ...}}}}'""" if agent else f"{name}=..."
    return BudgetExceeded(
        f"budget exceeded: {who} {name}={limit:g}, spent {spent:g} {unit}{extra}",
        budget=name,
        hint=f"continue with a larger budget: `quorum resume THREAD --set {setting}`",
    )


_meters: OrderedDict[tuple[str, str], RunMeter] = OrderedDict()
MAX_METERS = 1024
"""Meters kept in a process. Runs from the LangGraph server have no driver that drops theirs
when they end, so the least recently used go beyond this: a meter is only a cache of its
run's journal, and one asked for again is seeded from it again."""


async def run_meter(
    store: BaseStore, thread_id: str, run: str, *, new_thread: bool = False
) -> RunMeter:
    """The meter of one run of a thread, seeded from its journal the first time it is asked for.

    A run that started its thread (`new_thread`) has nothing to read there.
    """
    key = (thread_id, run)
    if key not in _meters:
        keyed = [] if new_thread and run else await journal.keyed_records(store, thread_id)
        # Only a run with an id has a meter of its own: from here on the thread's calls are
        # known (LangGraph gives every run an id, and Quorum's runs their own).
        meter = RunMeter(journaled={k for k, _ in keyed} if run else None)
        for _, call in keyed:
            if call.reply is not None:
                meter.add(call.agent, call)
                meter.seconds_before = max(meter.seconds_before, call.run_seconds)
        # Parallel tasks ask at once: the first to finish seeding wins, so all share one.
        _meters.setdefault(key, meter)
        while len(_meters) > MAX_METERS:
            oldest = next(iter(_meters))
            if _meters[oldest].in_flight:
                break  # never drop a meter holding calls in flight: its budget would leak
            del _meters[oldest]
    _meters.move_to_end(key)
    return _meters[key]


@dataclass(frozen=True)
class LedgerRow:
    """What a set of model calls spent: the run's, one agent's or one process run's."""

    calls: int = 0
    """Calls answered (a call retried three times counts once)."""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    """Time spent waiting for the answered requests."""
    p50_seconds: float = 0.0
    """Median time of one answered request."""
    p95_seconds: float = 0.0
    """95th percentile time of one answered request."""
    attempts: int = 0
    """Requests sent, failed ones included (a request cut off by a crash never reached the
    journal and is not counted)."""
    errors: int = 0
    """Failed attempts."""

    @classmethod
    def of(cls, calls: Sequence[journal.CallRecord]) -> LedgerRow:
        """The row of `calls` (answered or not)."""
        answered = [c for c in calls if c.reply is not None]
        latencies = sorted(c.seconds for c in answered)
        return cls(
            calls=len(answered),
            input_tokens=sum(c.input_tokens for c in answered),
            output_tokens=sum(c.output_tokens for c in answered),
            cost_usd=sum(c.cost_usd for c in answered),
            seconds=sum(latencies),
            p50_seconds=_percentile(latencies, 50),
            p95_seconds=_percentile(latencies, 95),
            attempts=sum(c.attempts for c in calls),
            errors=sum(len(c.errors) for c in calls),
        )

    def usage(self) -> Usage:
        """The row as the state's usage counts it."""
        return Usage(
            calls=self.calls,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            attempts=self.attempts,
            cost_usd=self.cost_usd,
            seconds=self.seconds,
        )


@dataclass(frozen=True)
class Ledger:
    """What a thread's model calls spent: in total, per agent and per run (a run or resume).

    Built from the thread's call journal alone, the record each call leaves before its
    caller sees the reply, so it is kept with the thread and counts every call once, also
    across crashes and resumes.
    """

    total: LedgerRow = field(default_factory=LedgerRow)
    agents: dict[str, LedgerRow] = field(default_factory=dict)
    runs: list[LedgerRow] = field(default_factory=list)
    """One row per run that got replies, oldest first."""

    @classmethod
    def of(cls, calls: Sequence[journal.CallRecord]) -> Ledger:
        """The ledger of a thread's journaled `calls`."""
        by_agent: dict[str, list[journal.CallRecord]] = {}
        by_run: dict[str, list[journal.CallRecord]] = {}
        for call in sorted(calls, key=lambda c: c.started_at):
            by_agent.setdefault(call.agent, []).append(call)
            if call.reply is not None:
                by_run.setdefault(call.run, []).append(call)
        return cls(
            total=LedgerRow.of(calls),
            agents={agent: LedgerRow.of(mine) for agent, mine in by_agent.items()},
            runs=[LedgerRow.of(mine) for mine in by_run.values()],
        )

    def usage(self) -> dict[str, Usage]:
        """Usage per agent, as the state counts it."""
        return {agent: row.usage() for agent, row in self.agents.items()}


def _percentile(ordered: Sequence[float], percent: int) -> float:
    """The `percent` percentile of `ordered` (nearest rank: always a latency that was seen)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


async def journal_ledger(store: BaseStore, thread_id: str) -> Ledger:
    """The ledger of every call a thread has journaled."""
    return Ledger.of(await journal.records(store, thread_id))


def forget(thread_id: str) -> None:
    """Drop the meters of a thread's finished runs."""
    for key in [k for k in _meters if k[0] == thread_id]:
        del _meters[key]


def estimate_tokens(messages: Sequence[BaseMessage]) -> int:
    """A rough count of the input tokens `messages` will cost (about 4 characters a token)."""
    # A message's text is its content when that is a string: taken as it is, without the
    # `text` accessor's copy (this runs over the whole conversation before every call).
    return sum(len(c if isinstance(c := m.content, str) else m.text) + 16 for m in messages) // 4
