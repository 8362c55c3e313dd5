"""The graph class every pattern is built with: its input and run settings checked at the door.

LangGraph hands a run's input to the state by key, dropping keys it does not know, and builds
the context dataclass without validating it: a wrong key surfaced as `KeyError('input')` deep
in an agent, and `max_steps=0` ran. A `Pattern` builder compiles into a `PatternGraph`, whose
`stream` and `astream` (every way in goes through them: `invoke`, `ainvoke`, the runner, and
`langgraph dev` for Studio and langgraph-sdk) first:

- validate the input against the pattern's input schema (`quorum.state`), naming the wrong
  key or the missing one;
- validate the run settings into a `QuorumContext`, with the message `--set` gives; without
  settings, a thread being continued keeps those it ran with, and a new run gets defaults;
- name the pattern and its settings in the checkpoint metadata, so a thread made by a graph
  compiled with your own checkpointer is listed, shown and resumed like any other;

and when the run ends, however it ends, drop its meter (the running totals its budgets are
checked against). A run the LangGraph server started (Studio, langgraph-sdk) is traced here as
Quorum's run lifecycle traces a run of the CLI or Python: one run span, named for the pattern,
over its agent steps, with how it ended and what the thread spent (tests/test_studio_parity).

It also stops LangGraph repeating the context schema as a `configurable` config schema, so
Studio shows the run settings once.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import nullcontext
from typing import Any, Self

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel, TypeAdapter, ValidationError, create_model

from quorum import journal, metering, run_settings, telemetry
from quorum.context import QuorumContext
from quorum.errors import UsageError, problems
from quorum.framework import become
from quorum.outcome import trace_outcome


class AgentGraph(StateGraph[Any, QuorumContext, Any, Any]):
    """A graph builder whose agents are added with `add_agent`, metered and traced there.

    An agent step is a node that asks the model: what its calls spent reaches the state's
    `usage` once, when it finishes, and it is an agent span in the traces, named by the
    state's `label` or its agent (`metering.metered`). Both are attached here, where a graph
    is wired, so nodes stay plain async functions and reading a graph module shows which of
    its steps are agents.
    """

    def add_agent(
        self, node: Callable[..., Any], *, name: str | None = None, **kwargs: Any
    ) -> Self:
        """Add `node` as an agent step (its name is the function's unless `name` is given)."""
        return self.add_node(name or node.__name__, metering.metered(node), **kwargs)


class Pattern(AgentGraph):
    """A pattern's builder: its state, its input and output views, and its name."""

    def __init__(
        self, name: str, state: type[Any], *, input_schema: type[Any], output_schema: type[Any]
    ) -> None:
        super().__init__(
            state,
            context_schema=QuorumContext,
            input_schema=input_schema,
            output_schema=output_schema,
        )
        self.name = name
        self._input = TypeAdapter(input_schema)

    def compile(self, *args: Any, **kwargs: Any) -> PatternGraph:
        """Compile as LangGraph does, named after the pattern unless named otherwise."""
        kwargs["name"] = kwargs.get("name") or self.name
        graph = super().compile(*args, **kwargs)
        # LangGraph's compile builds its own class: PatternGraph only adds checks to it,
        # with no state of its own, so the compiled graph can take that class as it is.
        become(graph, PatternGraph)
        return graph  # type: ignore[return-value]

    def admit(
        self, input: Any, config: RunnableConfig | None, context: Any
    ) -> tuple[Any, RunnableConfig, QuorumContext]:
        """The run's input, config and context, checked; raises `UsageError` on bad ones."""
        if isinstance(input, dict):
            input = self._checked_input(input)
        settings = QuorumContext.checked(context)
        given: RunnableConfig = config or {}
        metadata = {
            "quorum_pattern": self.name,
            run_settings.METADATA_KEY: json.dumps(settings.to_dict()),
            **(given.get("metadata") or {}),
        }
        return input, {**given, "metadata": metadata}, settings

    def _checked_input(self, input: dict[str, Any]) -> dict[str, Any]:
        try:
            return dict(self._input.validate_python(input))
        except ValidationError as error:
            raise UsageError(
                f"invalid input for the {self.name} pattern: {problems(error)}",
                hint='give {"input": "<text>"}: the goal, topic, question or task to work on',
            ) from None


class PatternGraph(CompiledStateGraph[Any, QuorumContext, Any, Any]):
    """A compiled pattern that checks what it is given before it runs (see the module)."""

    builder: Pattern

    def stream(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        context: Any = None,
        **kwargs: Any,
    ) -> Iterator[Any]:
        """LangGraph's `stream`, after checking the input and settings."""
        input, config, checked = self.builder.admit(input, config, context)
        return super().stream(input, config, context=checked, **kwargs)

    async def astream(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        context: Any = None,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        """LangGraph's `astream`, after checking the input and settings.

        A thread continued without settings (a Studio or langgraph-sdk resume of an
        interrupt) continues with those it ran with.
        """
        if context is None and not isinstance(input, dict):
            context = await self._stored_context(config)
        resumed = not isinstance(input, dict)  # a new run's input is a dict
        input, config, checked = self.builder.admit(input, config, context)
        configurable = config.get("configurable") or {}
        top = not configurable.get("checkpoint_ns")  # a pattern run as a subgraph is not a run
        if top:
            config = await run_settings.keep_once(self.store, config)
        # A run of the LangGraph server (Studio, langgraph-sdk) gets the span a run of the CLI
        # or Python gets from Quorum's run lifecycle, which fences its runs' writes.
        served = top and journal.FENCE not in configurable
        thread_id = str(configurable.get("thread_id", ""))
        run_id = str((config.get("metadata") or {}).get("run_id") or config.get("run_id") or "")
        with (
            (
                telemetry.run_span(self.builder.name, thread_id, run_id, resumed=resumed)
                if served
                else nullcontext()
            ) as span,
            telemetry.served_run(thread_id, span),
        ):
            try:
                async for chunk in super().astream(input, config, context=checked, **kwargs):
                    yield chunk
            except Exception:
                if span is not None:
                    await trace_outcome(self, config, span)
                raise
            else:
                if span is not None:
                    await trace_outcome(self, config, span)
            finally:
                if top:
                    metering.forget(thread_id)

    async def _stored_context(self, config: RunnableConfig | None) -> dict[str, Any] | None:
        if not isinstance(self.checkpointer, BaseCheckpointSaver) or not config:
            return None
        saved = await self.checkpointer.aget_tuple(config)
        if saved is None:
            return None
        thread_id = str(saved.config["configurable"]["thread_id"])
        return await run_settings.settings_of(self.store, thread_id, saved.metadata or {})

    def config_schema(self, *, include: Sequence[str] | None = None) -> type[BaseModel]:
        """No `configurable` copy of the run settings: they are the context schema."""
        return create_model(self.get_name("Config"))
