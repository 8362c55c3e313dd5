"""Run a question set through strategies, each question on its own durable thread.

A question's thread id is `<eval id>-<strategy>-<index>`, and the eval id is derived from
the questions and the run settings, so running the same eval again (after a kill, Ctrl-C or
a failure) finds its threads: a finished question is read back from its checkpoint and not
run again, an interrupted or failed one continues from its last checkpoint, and adding a
strategy to an eval runs only that strategy. Questions run concurrently up to a limit, in
question order (every strategy answers question 1 before any starts question 2), so an eval
stopped early still compares strategies on the same questions. A total token or cost budget
is checked before each question starts: once it is spent no new question starts, those
running finish, and the result says what was measured and why it stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from langgraph.graph.state import CompiledStateGraph

from quorum import metering, models
from quorum.checkpoints import Persistence, open_persistence
from quorum.context import QuorumContext
from quorum.errors import QuorumError, UsageError
from quorum.evals.questions import Question
from quorum.evals.strategies import STRATEGIES, context_for
from quorum.lifecycle import drive, hold_thread, thread_config
from quorum.outcome import status_of
from quorum.settings import redact
from quorum.state import total_usage

QuestionStatus = Literal["answered", "invalid", "failed", "not_run"]
"""`answered`: the strategy reached a well-formed answer (right or wrong). `invalid`: it
finished but reached no answer of the question's kind (no number for a numeric question);
it counts as wrong. `failed`: it raised; it counts as wrong. `not_run`: the eval's budget
ran out before it started."""


@dataclass(frozen=True)
class QuestionResult:
    """How one strategy did on one question."""

    strategy: str
    index: int
    question: str
    expected: str | list[str]
    status: QuestionStatus
    answer: str | None
    correct: bool
    thread_id: str
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    """Wall time from the thread's first checkpoint to its last."""
    error: str | None = None
    reused: bool = False
    """Finished by an earlier run of this eval: read from its checkpoint, not run again."""

    @property
    def measured(self) -> bool:
        """Whether the question counts in the strategy's accuracy."""
        return self.status != "not_run"

    @property
    def tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class EvalResult:
    """Every strategy's result on every question, and why the eval stopped early, if it did."""

    eval_id: str
    strategies: list[str]
    questions: list[Question]
    results: list[QuestionResult]
    context: dict[str, Any]
    stopped: str | None = None
    """Why questions were left unrun (the budget that ran out), or None."""

    def of(self, strategy: str) -> list[QuestionResult]:
        """`strategy`'s results in question order."""
        return sorted((r for r in self.results if r.strategy == strategy), key=lambda r: r.index)


OnResult = Callable[[QuestionResult], None]


def eval_id_for(questions: list[Question], context: QuorumContext) -> str:
    """The id an eval of these questions with these settings runs under."""
    material = json.dumps(
        {"questions": [asdict(q) for q in questions], "context": context.to_dict()},
        sort_keys=True,
    )
    return "eval-" + hashlib.sha256(material.encode()).hexdigest()[:10]


def thread_id_for(eval_id: str, strategy: str, index: int) -> str:
    """The thread that holds `strategy`'s answer to question `index`."""
    return f"{eval_id}-{strategy}-{index}"


async def run_eval(
    questions: list[Question],
    strategies: list[str],
    *,
    context: QuorumContext | None = None,
    eval_id: str | None = None,
    database: str | None = None,
    concurrency: int = 2,
    max_tokens: int | None = None,
    max_cost_usd: float | None = None,
    on_result: OnResult | None = None,
) -> EvalResult:
    """Answer every question with every strategy and score the answers."""
    _check_request(questions, strategies, concurrency)
    context = context or QuorumContext()
    eval_id = eval_id or eval_id_for(questions, context)
    contexts = {s: context_for(s, context) for s in strategies}
    # A bad endpoint, key or model name fails here, before any question runs.
    distinct = {json.dumps(c.to_dict(), sort_keys=True): c for c in contexts.values()}
    for each in distinct.values():
        await models.preflight(each)
    done: list[QuestionResult] = []
    stopped: str | None = None
    async with open_persistence(database) as kept:
        graphs = {
            s: STRATEGIES[s].compile(checkpointer=kept.saver, store=kept.store, name=f"eval.{s}")
            for s in strategies
        }
        slots = asyncio.Semaphore(concurrency)

        async def answer(strategy: str, index: int) -> None:
            try:
                result = await _answer(
                    kept, graphs[strategy], eval_id, strategy, index, questions[index],
                    contexts[strategy],
                )  # fmt: skip
            finally:
                slots.release()
            done.append(result)
            if on_result is not None:
                on_result(result)

        async with asyncio.TaskGroup() as group:
            for index, question in enumerate(questions):
                for strategy in strategies:
                    await slots.acquire()
                    stopped = stopped or _spent(done, max_tokens, max_cost_usd)
                    if stopped is None:
                        group.create_task(answer(strategy, index))
                        continue
                    slots.release()
                    done.append(_not_run(eval_id, strategy, index, question))
    return as_far_as_done(eval_id, strategies, questions, done, context, stopped)


def as_far_as_done(
    eval_id: str,
    strategies: list[str],
    questions: list[Question],
    done: list[QuestionResult],
    context: QuorumContext,
    stopped: str | None = None,
) -> EvalResult:
    """The eval with the answers in `done`; any other is counted not run (it `stopped`)."""
    have = {(r.strategy, r.index) for r in done}
    rest = [
        _not_run(eval_id, strategy, index, question)
        for index, question in enumerate(questions)
        for strategy in strategies
        if (strategy, index) not in have
    ]
    return EvalResult(
        eval_id=eval_id,
        strategies=list(strategies),
        questions=list(questions),
        results=sorted(done + rest, key=lambda r: (r.index, strategies.index(r.strategy))),
        context=context.to_dict(),
        stopped=stopped,
    )


def _check_request(questions: list[Question], strategies: list[str], concurrency: int) -> None:
    """Refuse an eval that cannot run, before anything starts."""
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise UsageError(
            f"unknown strategy {', '.join(unknown)}" if unknown else "no strategy chosen",
            hint=f"choose from: {', '.join(STRATEGIES)}",
        )
    if not questions:
        raise UsageError("the question set is empty")
    if concurrency < 1:
        raise UsageError("concurrency must be at least 1")


def _not_run(eval_id: str, strategy: str, index: int, question: Question) -> QuestionResult:
    """A question the eval's budget left unasked."""
    return QuestionResult(
        strategy=strategy,
        index=index,
        question=question.question,
        expected=question.answer,
        status="not_run",
        answer=None,
        correct=False,
        thread_id=thread_id_for(eval_id, strategy, index),
    )


def _spent(
    done: list[QuestionResult], max_tokens: int | None, max_cost: float | None
) -> str | None:
    tokens = sum(r.tokens for r in done)
    cost = sum(r.cost_usd for r in done)
    if max_tokens is not None and tokens >= max_tokens:
        return f"eval budget max_tokens={max_tokens} spent ({tokens} tokens)"
    if max_cost is not None and cost >= max_cost:
        return f"eval budget max_cost_usd={max_cost:g} spent (${cost:.4f})"
    return None


async def _answer(
    kept: Persistence,
    graph: CompiledStateGraph[Any, QuorumContext, Any, Any],
    eval_id: str,
    strategy: str,
    index: int,
    question: Question,
    context: QuorumContext,
) -> QuestionResult:
    thread_id = thread_id_for(eval_id, strategy, index)
    config = thread_config(thread_id)
    error: str | None = None
    async with hold_thread(kept, thread_id) as lease:
        snapshot = await graph.aget_state(config)
        started = bool(snapshot.values)
        if started and snapshot.values.get("input") != question.question:
            raise UsageError(
                f"thread {thread_id} holds another question than question {index + 1} of this eval",
                hint="give this eval a new id (--id) or keep its questions as they were",
            )
        reused = started and not snapshot.next and "answer" in snapshot.values
        if not reused:
            # A thread that started before continues from its last checkpoint.
            payload = None if started else {"input": question.question, "kind": question.kind}
            labels = {"quorum_eval": eval_id, "quorum_strategy": strategy}
            try:
                await drive(
                    graph, payload, f"eval.{strategy}", thread_id, context, None, lease.holder,
                    metadata=labels, new_thread=not started,
                )  # fmt: skip
            except QuorumError as failure:  # the question failed: it is counted, with its reason
                error = redact(failure.message)
            snapshot = await graph.aget_state(config)
            stood, stopped = status_of(snapshot, None)
            if error is None and stopped is not None:
                error = f"{stood}: {stopped}"  # a budget stop: the run ends quietly
    # Usage from the journal: every answered call on the thread, those of earlier runs too.
    total = total_usage((await metering.journal_ledger(kept.store, thread_id)).usage())
    answer = snapshot.values.get("answer") if not snapshot.next else None
    status: QuestionStatus = "failed"
    if answer is not None:
        status = "answered" if question.is_well_formed(answer) else "invalid"
    return QuestionResult(
        strategy=strategy,
        index=index,
        question=question.question,
        expected=question.answer,
        status=status,
        answer=answer,
        correct=status == "answered" and question.is_correct(answer or ""),
        thread_id=thread_id,
        calls=total["calls"],
        input_tokens=total["input_tokens"],
        output_tokens=total["output_tokens"],
        cost_usd=total.get("cost_usd", 0.0),
        seconds=await _wall_seconds(kept, thread_id),
        error=error
        or {"failed": "no final answer", "invalid": "no well-formed answer"}.get(status),
        reused=reused,
    )


async def _wall_seconds(kept: Persistence, thread_id: str) -> float:
    stamps = [
        saved.checkpoint["ts"]
        async for saved in kept.saver.alist({"configurable": {"thread_id": thread_id}})
    ]
    if len(stamps) < 2:
        return 0.0
    first, last = (datetime.fromisoformat(ts) for ts in (min(stamps), max(stamps)))
    return round((last - first).total_seconds(), 3)
