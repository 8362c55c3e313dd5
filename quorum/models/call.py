"""One model call: the pipeline every request goes through (see `quorum.models`).

Journal replay, budget, rate limit and request slot, retry with backoff, error mapping,
cost, the model-call span; replies replayed from the journal are shown to the run's stream.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, nullcontext
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
)
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.rate_limiters import InMemoryRateLimiter

from quorum import embedded, journal, metering, telemetry
from quorum.context import QuorumContext
from quorum.errors import ModelError
from quorum.models.endpoint import endpoint
from quorum.settings import Settings, get_settings, redact

if TYPE_CHECKING:
    # openai and langchain-openai take most of a second to import: they are loaded when the
    # first model is built, so commands that only read threads (show, threads) never pay it.
    import openai


async def _invoke(
    model: Any,
    messages: Sequence[BaseMessage],
    agent: str,
    context: QuorumContext,
    *,
    structured: bool = False,
) -> AIMessage:
    """One model call: replayed from the journal, or requested within budget and retries.

    `structured` marks a call whose reply is JSON for a schema (not prose a person reads): a
    stream of the run's messages says so in each message's metadata (`quorum_structured`).
    """
    name = journal.model_name(model)
    metadata = {"quorum_agent": agent, "quorum_structured": structured}
    with telemetry.model_span(agent, name) as span:
        entry = journal.entry_for(agent, model, messages)
        record, meter = await _journaled(entry, agent, name)
        replayed = record.reply is not None and not record.rejected
        if replayed:
            meter = None  # nothing is spent again
        else:
            record.rejected = False
            if entry is not None and meter is not None:
                meter.journaling(entry.key)
            held = None
            if meter is not None:
                estimate = metering.estimate_tokens(messages)
                cost = metering.cost_usd(get_settings(), name, estimate, 0)
                held = meter.reserve(agent, context, estimate=estimate, cost=cost)
            answered = None
            try:
                record = answered = await _request(model, messages, record, entry, meter, metadata)
            finally:
                if meter is not None and held is not None:
                    meter.settle(held, answered)
        if span is not None:
            left = meter.left(agent, context) if meter is not None else {}
            telemetry.ended_model_call(span, record, replayed=replayed, left=left)
        if meter is not None:
            # Over budget now: stop here. The reply is journaled, so a resume with a larger
            # budget gets it back without paying for it again.
            meter.check(agent, context)
    metering.record(agent, record)
    if entry is not None:
        journal.used(entry, record)
    assert record.reply is not None
    if replayed:
        await _show_replayed(record.reply, messages, metadata)
    return record.reply


async def _journaled(
    entry: journal.JournalEntry | None, agent: str, name: str
) -> tuple[journal.CallRecord, metering.RunMeter | None]:
    """The call's record, from the journal or new, and the meter of its run (if journaled)."""
    if entry is None:
        return journal.CallRecord(agent=agent, model=name), None
    meter = await metering.run_meter(
        entry.store, entry.thread_id, entry.run, new_thread=entry.new_thread
    )
    # The run's meter knows the journal's keys: a call never made before is not read for.
    record = await entry.read() if meter.may_be_journaled(entry.key) else None
    return record or journal.CallRecord(agent=agent, model=name), meter


class _Replayed(BaseChatModel):
    """Hands back a reply the journal already holds, through the run's callbacks.

    A run's message stream (LangGraph's `messages` mode: the CLI, Studio, langgraph-sdk)
    hears of every model call through LangChain's callbacks; a replayed reply makes no
    request, so this stands in for the model to show it, whole and once.
    """

    reply: AIMessage

    @property
    def _llm_type(self) -> str:
        return "quorum-journal"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self.reply)])


async def _show_replayed(
    reply: AIMessage, messages: Sequence[BaseMessage], metadata: dict[str, Any]
) -> None:
    """Tell the run's callbacks of a reply replayed from the journal, marked as replayed."""
    # Without its usage: what a replay shows is never counted again (LangSmith sums usage).
    shown = reply.model_copy(update={"usage_metadata": None})
    await _Replayed(reply=shown).ainvoke(
        list(messages),
        config={
            "run_name": metadata["quorum_agent"],
            "metadata": {**metadata, "quorum_replayed": True},
            "tags": ["quorum:replayed"],
        },
    )


async def _request(
    model: Any,
    messages: Sequence[BaseMessage],
    record: journal.CallRecord,
    entry: journal.JournalEntry | None,
    meter: metering.RunMeter | None,
    metadata: dict[str, Any],
) -> journal.CallRecord:
    settings = get_settings()
    agent = record.agent
    for attempt in range(1, settings.max_attempts + 1):
        started = time.monotonic()
        record.started_at = time.time()  # wall clock: a report lays calls out on a time axis
        record.attempts += 1
        try:
            # Named by its agent in LangSmith, not by its class (ChatOpenAI). A run streamed
            # with LangGraph's `messages` mode has a streaming callback here: ChatOpenAI then
            # streams the reply (its usage comes in the stream's last chunk) and the tokens
            # reach the stream as they arrive; the reply is whole, as ever, when this returns.
            async with _request_slot(settings):
                reply = await model.ainvoke(
                    list(messages), config={"run_name": agent, "metadata": metadata}
                )
        except Exception as error:
            failure, wait = _classify(error, agent, attempt, settings)
            if wait is not None and endpoint(settings).embedded:
                # Its own server may be what failed: back up before the next attempt, and said.
                restarted = await asyncio.to_thread(embedded.restart_if_ended, settings)
                if restarted is not None:
                    failure = ModelError(f"{failure.message}; {restarted}", hint=failure.hint)
            record.errors.append(failure.message)
            if entry is not None:
                await entry.write(record)
            if wait is None or attempt == settings.max_attempts:
                telemetry.gave_up(record.attempts, record.errors)
                if wait is not None:
                    failure = ModelError(
                        f"{failure.message} ({attempt} attempts)", hint=failure.hint
                    )
                raise failure from None  # the endpoint's error, redacted, is in the message
            await asyncio.sleep(wait)
            continue
        if not isinstance(reply, AIMessage):
            raise TypeError(f"chat model returned {type(reply).__name__}, not AIMessage")
        usage = _usage(reply, messages, agent)
        record.reply = reply
        record.input_tokens = int(usage.get("input_tokens", 0))
        record.output_tokens = int(usage.get("output_tokens", 0))
        record.seconds = round(time.monotonic() - started, 3)
        record.cost_usd = metering.cost_usd(
            settings, record.model, record.input_tokens, record.output_tokens
        )
        record.run_seconds = round(meter.seconds, 3) if meter is not None else 0.0
        record.run = entry.run if entry is not None else ""
        if entry is not None:
            await entry.write(record)
        return record
    raise AssertionError("unreachable: the last attempt returns or raises")


def _usage(reply: AIMessage, messages: Sequence[BaseMessage], agent: str) -> dict[str, Any]:
    """The tokens `reply` took, as the endpoint reports them.

    An endpoint that reports none (some servers leave it out of a streamed reply) is
    counted roughly, never as free, so budgets still hold.
    """
    usage: dict[str, Any] = dict(reply.usage_metadata or {})
    if usage:
        return usage
    _warn_once(f"the endpoint reported no token usage for agent '{agent}''s call")
    return {
        "input_tokens": metering.estimate_tokens(messages),
        "output_tokens": metering.estimate_tokens([reply]),
    }


_RATES: dict[tuple[str, float], InMemoryRateLimiter] = {}
_SLOTS: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, int], asyncio.Semaphore]] = (
    WeakKeyDictionary()
)


@asynccontextmanager
async def _request_slot(settings: Settings) -> AsyncIterator[None]:
    """Hold one of the endpoint's request slots, once its rate limiter lets a request go.

    Keyed by endpoint: every agent and worker of the process shares them. The rate limiter
    (LangChain's token bucket) is thread-safe and shared by every event loop; a semaphore
    belongs to one loop, so each loop has its own.
    """
    where = settings.base_url or ""
    slots = None
    if settings.max_concurrent_requests is not None:
        per_loop = _SLOTS.setdefault(asyncio.get_running_loop(), {})
        key = (where, settings.max_concurrent_requests)
        slots = per_loop.setdefault(key, asyncio.Semaphore(settings.max_concurrent_requests))
    rate = None
    if settings.requests_per_second is not None:
        rate = _RATES.setdefault(
            (where, settings.requests_per_second),
            InMemoryRateLimiter(
                requests_per_second=settings.requests_per_second, check_every_n_seconds=0.05
            ),
        )
    # The slot first: a request waiting for its turn at the rate limit must not let more
    # than the allowed number go the moment it passes.
    async with slots if slots is not None else nullcontext():
        if rate is not None:
            await rate.aacquire()
        yield


RETRIED_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))
"""Statuses a later attempt can fix (the same set OpenAI's own client retries)."""


_WARNED: set[str] = set()


def _warn_once(what: str) -> None:
    """Say on stderr, once per process, that token counts are estimates."""
    if "usage" not in _WARNED:
        _WARNED.add("usage")
        print(
            f"quorum: {what}; its tokens and those of any call like it are estimated "
            "(about 4 characters a token). Budgets count the estimates.",
            file=sys.stderr,
        )


EMPTY_STREAM = "No generations found in stream."
"""What langchain-core raises when a streamed reply held no chunk (its message is the only
sign: a plain ValueError); tests/models/test_faults.py sends such a reply."""


def _classify(
    error: Exception, agent: str, attempt: int, settings: Settings
) -> tuple[ModelError, float | None]:
    """What went wrong, and how long to wait before the next attempt (None: do not retry)."""
    import openai  # loaded with the model that raised

    if isinstance(error, openai.AuthenticationError | openai.PermissionDeniedError):
        return ModelError(
            f"the model endpoint refused the API key (agent '{agent}'): {_said(error)}",
            hint="check QUORUM_API_KEY",
        ), None
    if isinstance(error, openai.NotFoundError):
        return ModelError(
            f"the model endpoint does not know the model for agent '{agent}'",
            hint="check QUORUM_MODEL or the context's 'model' and 'models'",
        ), None
    if isinstance(error, openai.APIStatusError) and error.status_code not in RETRIED_STATUSES:
        return ModelError(
            f"the model endpoint rejected agent '{agent}''s request "
            f"(HTTP {error.status_code}): {_said(error)}",
            hint="retrying will not help: check the model's limits (context length, "
            "output cap) and the endpoint's settings",
        ), None
    if isinstance(error, openai.APIStatusError):
        what = f"HTTP {error.status_code}: {_said(error)}"
    elif isinstance(error, openai.APITimeoutError):
        what = f"no answer within {endpoint(settings).timeout:g} s"
    elif isinstance(error, openai.APIConnectionError):
        what = f"connection failed ({type(error.__cause__ or error).__name__})"
    elif isinstance(error, json.JSONDecodeError | openai.APIResponseValidationError):
        what = f"malformed response body ({redact(str(error))[:200]})"
    elif isinstance(error, ValueError) and str(error) == EMPTY_STREAM:
        # A streamed reply whose body held no event (a cut or non-SSE body): LangChain's
        # words for it; the same fault as a malformed body, streamed.
        what = "malformed response body (a stream with no reply in it)"
    else:
        raise error  # a bug, not the endpoint: keep its traceback
    failure = ModelError(
        f"the model endpoint failed agent '{agent}''s call: {what}",
        hint="check that the endpoint is up and not overloaded, or raise QUORUM_MAX_ATTEMPTS",
    )
    backoff = settings.retry_wait * 2 ** (attempt - 1)
    wait = min(backoff, settings.retry_max_wait) * random.uniform(0.5, 1.0)
    asked = _retry_after(error)
    if asked is not None:
        if asked > settings.retry_max_wait:
            return ModelError(
                f"{failure.message}; it asks to retry after {asked:g} s",
                hint=f"retry later, or raise QUORUM_RETRY_MAX_WAIT above {asked:g}",
            ), None
        wait = max(wait, asked)
    return failure, wait


def _retry_after(error: Exception) -> float | None:
    """The wait a 429 or 503 asks for, in seconds (Retry-After, or Retry-After-Ms)."""
    response = getattr(error, "response", None)
    if response is None:
        return None
    headers = response.headers
    try:
        if (millis := headers.get("retry-after-ms")) is not None:
            return max(float(millis) / 1000, 0.0)
        if (value := headers.get("retry-after")) is None:
            return None
        try:
            return max(float(value), 0.0)
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(when.timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def _said(error: openai.APIStatusError) -> str:
    """What the endpoint said, short and with secrets hidden."""
    body = error.body if isinstance(error.body, dict) else {}
    message = body.get("message") or (body.get("error") or {}).get("message") or error.message
    return redact(str(message))[:300]
