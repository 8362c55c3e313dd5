"""Tracing: the one place runs, agents, model calls and tool calls become spans.

OpenTelemetry. When the standard variables ask for it (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: OTLP over HTTP; `OTEL_TRACES_EXPORTER=console`), or an
application has set its own global TracerProvider, every run makes one span tree:

    quorum.orchestrator                 invoke_workflow: the run (or one resume of it)
      researcher (s2)                   invoke_agent: one per step an agent takes
        chat gpt-4o-mini                chat: one per model call, every attempt included
          execute_tool calculator       execute_tool: the calls that reply asked for

with the OpenTelemetry GenAI semantic-convention attributes (`gen_ai.*`) and Quorum's own
(`quorum.*`: pattern, thread, agent, attempts, budget left, cost). The hooks are called from
the choke points only: the runner (run), `metering.metered` (agent), `models.call._invoke` (model
call) and `tools.contract.call_tool` (tool call). With nothing configured each hook is one
identity check of a cached value and returns a shared do-nothing context, and the SDK is
never imported.

LangSmith. With `LANGSMITH_TRACING=true` a run is traced through `langsmith_callbacks()`: one
tree named `quorum.PATTERN`, each worker named by its agent and plan step, each model call by
its agent; pattern, thread, tokens and cost are metadata of the root only, and the run's
settings, which LangGraph hands to every step, are left out.

Whatever leaves through here, attribute, event, payload or error, is redacted of every
configured secret first (`quorum.settings.redact`).
"""

from __future__ import annotations

import json
import sys
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.tracers.langchain import LangChainTracer
from langgraph.errors import GraphBubbleUp
from opentelemetry import trace

from quorum.errors import ConfigError
from quorum.settings import Settings, get_settings, redact
from quorum.state import Usage, step_label, total_usage

if TYPE_CHECKING:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.tracers.schemas import Run
    from langsmith import Client
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

INSTRUMENTATION = "quorum"
PROVIDER = "openai"
"""`gen_ai.provider.name`: every model is reached through an OpenAI-compatible API."""

_OFF: AbstractContextManager[None] = nullcontext()


@dataclass
class _Setup:
    settings: Settings | None = None
    tracer: Tracer | None = None
    provider: TracerProvider | None = None
    """The provider Quorum made from the settings (shut down when they change)."""
    chosen: Any = None
    """A provider chosen in code (`use_provider`), which beats the settings."""
    langsmith: Client | None = None


_setup = _Setup()


def tracer() -> Tracer | None:
    """The tracer spans are made with, or None when nothing asks for traces."""
    settings = get_settings()
    if settings is not _setup.settings:
        _configure(settings)
    return _setup.tracer


@contextmanager
def use_provider(provider: Any) -> Iterator[None]:
    """Send Quorum's spans to `provider` while the block runs (an in-memory exporter, say)."""
    previous = _setup.chosen
    _setup.chosen, _setup.settings = provider, None
    try:
        yield
    finally:
        _setup.chosen, _setup.settings = previous, None


def _configure(settings: Settings) -> None:
    if _setup.provider is not None:
        _setup.provider.shutdown()
    _setup.settings, _setup.tracer, _setup.provider, _setup.langsmith = settings, None, None, None
    if _setup.chosen is not None:
        _setup.tracer = _setup.chosen.get_tracer(INSTRUMENTATION)
        return
    if settings.otel_sdk_disabled:
        return
    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        # The application set up OpenTelemetry itself: Quorum's spans join its traces.
        _setup.tracer = current.get_tracer(INSTRUMENTATION)
        return
    endpoint = settings.otel_exporter_otlp_traces_endpoint or settings.otel_exporter_otlp_endpoint
    names = settings.otel_traces_exporter or (("otlp",) if endpoint else ())
    if not names or "none" in names:
        return
    _setup.provider = _provider(settings, names)
    _setup.tracer = _setup.provider.get_tracer(INSTRUMENTATION)


def _provider(settings: Settings, names: tuple[str, ...]) -> TracerProvider:
    # Imported here: a process that traces nothing never loads the SDK.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.otel_service_name})
    )
    for name in names:
        if name == "otlp":
            provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(settings)))
        elif name == "console":
            # stderr: stdout carries the answer (`quorum run ... > answer.md`).
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        else:
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER names an exporter Quorum does not have: {name!r}",
                hint="use otlp (OTLP over HTTP), console, or none",
            )
    return provider


def _otlp_exporter(settings: Settings) -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.util.re import parse_env_headers

    protocol = settings.otel_exporter_otlp_protocol
    if protocol not in (None, "", "http/protobuf"):
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported",
            hint="Quorum exports OTLP over HTTP: set http/protobuf (or unset it) and point "
            "OTEL_EXPORTER_OTLP_ENDPOINT at the collector's HTTP port (usually 4318)",
        )
    url = settings.otel_exporter_otlp_traces_endpoint
    if url is None and settings.otel_exporter_otlp_endpoint:
        url = settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
    secret = settings.otel_exporter_otlp_headers
    headers = parse_env_headers(secret.get_secret_value(), liberal=True) if secret else None
    return OTLPSpanExporter(endpoint=url, headers=dict(headers) if headers else None)


# --- Spans -------------------------------------------------------------------------------------


def run_span(
    pattern: str, thread_id: str, run_id: str, *, resumed: bool
) -> AbstractContextManager[Span | None]:
    """The span of one run (or resume) of a thread; None when tracing is off."""
    active = tracer()
    if active is None:
        return _OFF
    return _span(
        active,
        f"quorum.{pattern}",
        {
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.workflow.name": pattern,
            "gen_ai.conversation.id": thread_id,
            "quorum.pattern": pattern,
            "quorum.thread_id": thread_id,
            "quorum.run_id": run_id,
            "quorum.resumed": resumed,
        },
    )


_SERVED_RUNS: dict[str, Span] = {}
"""The run span of each thread the LangGraph server is running now (`served_run`)."""


@contextmanager
def served_run(thread_id: str, span: Span | None) -> Iterator[None]:
    """Make `span` the parent of the steps of `thread_id`'s run while it lasts.

    The LangGraph server reads a run's stream from tasks of its own, one per chunk, so the
    run span the graph set as current while making one chunk is no longer current when the
    next chunk's steps start. Each step finds its run's span here instead, by its thread.
    """
    if span is None:
        yield
        return
    _SERVED_RUNS[thread_id] = span
    try:
        yield
    finally:
        if _SERVED_RUNS.get(thread_id) is span:
            del _SERVED_RUNS[thread_id]


def agent_span(agent: str, label: str) -> AbstractContextManager[Span | None]:
    """The span of one step of `agent` (a graph node), named `label` (`researcher (s2)`)."""
    active = tracer()
    if active is None:
        return _OFF
    attributes = _graph_attributes()
    parent = None
    if not trace.get_current_span().get_span_context().is_valid:
        # No span is current: a step of a run the server streams (see `served_run`).
        run = _SERVED_RUNS.get(str(attributes.get("quorum.thread_id", "")))
        parent = trace.set_span_in_context(run) if run is not None else None
    return _span(
        active,
        label,
        {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": agent,
            "quorum.agent": agent,
            **attributes,
        },
        parent=parent,
    )


def model_span(agent: str, model: str) -> AbstractContextManager[Span | None]:
    """The span of one model call of `agent`, over all its attempts."""
    active = tracer()
    if active is None:
        return _OFF
    return _span(
        active,
        f"chat {model}",
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": model,
            "gen_ai.agent.name": agent,
            "quorum.agent": agent,
            **_graph_attributes(),
        },
        kind=trace.SpanKind.CLIENT,
    )


def tool_span(
    tool: str, call_id: str, arguments: Mapping[str, Any], agent: str
) -> AbstractContextManager[Span | None]:
    """The span of one tool call: a child of the model call that asked for it, when known."""
    active = tracer()
    if active is None:
        return _OFF
    asked_by = _asked_by.pop(call_id, None)
    parent = trace.set_span_in_context(trace.NonRecordingSpan(asked_by)) if asked_by else None
    return _span(
        active,
        f"execute_tool {tool}",
        {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "gen_ai.tool.type": "function",
            "gen_ai.tool.call.id": call_id,
            "gen_ai.tool.call.arguments": _cut(json.dumps(arguments, default=str)),
            "quorum.agent": agent,
            **_graph_attributes(),
        },
        parent=parent,
    )


def ended_model_call(
    span: Span | None, call: Any, *, replayed: bool, left: Mapping[str, float]
) -> None:
    """Put what a model call returned on its span (`call` is a journal `CallRecord`)."""
    if span is None:
        return
    reply = call.reply
    metadata = reply.response_metadata or {}
    attributes: dict[str, Any] = {
        "quorum.attempts": call.attempts,
        "quorum.replayed": replayed,
        **{f"quorum.budget_left.{name}": value for name, value in left.items()},
    }
    if not replayed:
        # A replayed reply was paid for, and traced, by the run that got it.
        attributes |= {
            "gen_ai.usage.input_tokens": call.input_tokens,
            "gen_ai.usage.output_tokens": call.output_tokens,
            "quorum.cost_usd": call.cost_usd,
        }
    if finish := metadata.get("finish_reason"):
        attributes["gen_ai.response.finish_reasons"] = [str(finish)]
    if model := metadata.get("model_name"):
        attributes["gen_ai.response.model"] = str(model)
    if response_id := metadata.get("id"):
        attributes["gen_ai.response.id"] = str(response_id)
    span.set_attributes(attributes)
    for error in call.errors:
        span.add_event("attempt failed", {"error.message": redact(error)[:500]})
    context = span.get_span_context()
    for tool_call in reply.tool_calls:
        _asked_by[tool_call.get("id") or ""] = context
        while len(_asked_by) > MAX_PENDING_TOOL_CALLS:
            _asked_by.popitem(last=False)


def gave_up(attempts: int, errors: list[str]) -> None:
    """Put a failed model call's attempts and their errors on its span."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attribute("quorum.attempts", attempts)
    for error in errors:
        span.add_event("attempt failed", {"error.message": redact(error)[:500]})


def decided(decision: Mapping[str, Any]) -> None:
    """Put a person's approval decision (what, who, which way in) on the running tool span."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("quorum.approval.action", str(decision["action"]))
        span.set_attribute("quorum.approval.decided_by", str(decision["by"]))
        span.set_attribute("quorum.approval.via", str(decision["via"]))


def ended_tool_call(span: Span | None, result: str, status: str) -> None:
    """Put a tool call's result (cut to `QUORUM_TRACE_MAX_CHARS`) on its span."""
    if span is None:
        return
    span.set_attribute("gen_ai.tool.call.result", _cut(result))
    if status == "error":
        span.set_attribute("error.type", "tool_error")
        span.set_status(trace.Status(trace.StatusCode.ERROR, "the tool call failed"))


def ended_step(span: Span | None, usage: Mapping[str, Usage]) -> None:
    """Put what a step or a run spent (usage by agent) on its span."""
    if span is None or not usage:
        return
    total = total_usage(usage)
    span.set_attributes(
        {
            "quorum.usage.calls": total["calls"],
            "quorum.usage.input_tokens": total["input_tokens"],
            "quorum.usage.output_tokens": total["output_tokens"],
            "quorum.cost_usd": total.get("cost_usd", 0.0),
        }
    )


MAX_PENDING_TOOL_CALLS = 4096
"""Tool calls whose model span is remembered until the call runs (oldest forgotten first)."""

_asked_by: OrderedDict[str, trace.SpanContext] = OrderedDict()


@contextmanager
def _span(
    active: Tracer,
    name: str,
    attributes: dict[str, Any],
    *,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    parent: Any = None,
) -> Iterator[Span]:
    with active.start_as_current_span(
        name,
        context=parent,
        kind=kind,
        attributes=attributes,
        record_exception=False,  # an exception's text may hold what redact() must see first
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except GraphBubbleUp:
            # An interrupt (an approval to wait for) pauses the run: not a failure.
            span.set_attribute("quorum.interrupted", True)
            raise
        except BaseException as error:
            span.set_attribute("error.type", type(error).__name__)
            if budget := getattr(error, "budget", None):
                span.set_attribute("quorum.budget", str(budget))
            message = redact(str(error))[:500]
            span.set_status(trace.Status(trace.StatusCode.ERROR, message))
            span.add_event("exception", {"exception.type": type(error).__name__})
            raise


def _graph_attributes() -> dict[str, Any]:
    """Pattern, thread and step of the graph step running now (none outside a graph)."""
    from langgraph.config import get_config

    try:
        config = get_config()
    except RuntimeError:
        return {}
    metadata = config.get("metadata") or {}
    thread_id = str((config.get("configurable") or {}).get("thread_id", ""))
    pattern = str(metadata.get("quorum_pattern") or metadata.get("graph_id") or "")
    return {
        "quorum.pattern": pattern,
        "quorum.thread_id": thread_id,
        "gen_ai.conversation.id": thread_id,
        "quorum.node": str(metadata.get("langgraph_node", "")),
        "quorum.step": int(metadata.get("langgraph_step", -1)),
    }


def _cut(text: str) -> str:
    limit = get_settings().trace_max_chars
    text = redact(text)
    return text if len(text) <= limit else f"{text[:limit]}... [cut: {len(text)} characters]"


# --- LangSmith ---------------------------------------------------------------------------------

ROOT_ONLY = frozenset({"quorum_pattern", "quorum_run_id", "thread_id"})
"""Metadata LangGraph hands every step, kept on the run's root only."""
NEVER_TRACED = frozenset({"quorum_context", "run_id"})
"""Metadata kept for checkpoints but not traced: the run's settings, the meter's run id."""


def langsmith_callbacks() -> list[BaseCallbackHandler]:
    """The LangSmith tracer for one run when LangSmith tracing is on; [] when it is off."""
    from langsmith.utils import tracing_is_enabled

    if not tracing_is_enabled():
        return []
    tracer()  # keeps the client in step with the settings
    if _setup.langsmith is None:
        from langsmith import Client

        _setup.langsmith = Client(
            hide_inputs=_redacted, hide_outputs=_redacted, hide_metadata=_redacted
        )
    return [QuorumTracer(client=_setup.langsmith)]


FLUSH_SECONDS = 30.0
"""Longest wait for LangSmith at the end of a run (an unreachable server must not hang it)."""


def flush_langsmith(callbacks: list[BaseCallbackHandler]) -> None:
    """Wait until a run's LangSmith runs are sent (a short CLI run would exit first)."""
    for handler in callbacks:
        if isinstance(handler, QuorumTracer):
            handler.client.flush(timeout=FLUSH_SECONDS)


class QuorumTracer(LangChainTracer):
    """LangChain's LangSmith tracer, naming runs by agent and keeping settings out."""

    def _persist_run_single(self, run: Run) -> None:
        metadata = dict(run.extra.get("metadata") or {})
        if run.parent_run_id is None and "quorum_pattern" in metadata:
            metadata["quorum_run_id"] = metadata.get("run_id", "")
        drop = NEVER_TRACED if run.parent_run_id is None else NEVER_TRACED | ROOT_ONLY
        run.extra["metadata"] = {k: v for k, v in metadata.items() if k not in drop}
        # Every worker is the node `worker`: name it by its agent and plan step instead.
        if run.name == "worker" and isinstance(run.inputs, Mapping) and step_label(run.inputs):
            run.name = step_label(run.inputs) or run.name
            run.extra["metadata"] |= {
                "quorum_agent": run.inputs["worker"],
                "quorum_plan_step": run.inputs["step_id"],
            }
        super()._persist_run_single(run)

    def _on_chain_end(self, run: Run) -> None:
        if run.parent_run_id is None and isinstance(run.outputs, Mapping):
            usage: dict[str, Usage] = run.outputs.get("usage") or {}
            total = total_usage(usage)
            run.extra.setdefault("metadata", {}).update(
                {
                    "quorum_input_tokens": total["input_tokens"],
                    "quorum_output_tokens": total["output_tokens"],
                    "quorum_cost_usd": total.get("cost_usd", 0.0),
                    "quorum_usage": {agent: dict(u) for agent, u in usage.items()},
                }
            )
        super()._on_chain_end(run)

    def _update_run_single(self, run: Run) -> None:  # type: ignore[override]
        if run.error:
            run.error = redact(run.error)
        LangChainTracer._update_run_single(run)


def _redacted(value: Any) -> Any:
    """`value` (a run's inputs, outputs or metadata) with every secret hidden."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(item) for item in value]
    return value
