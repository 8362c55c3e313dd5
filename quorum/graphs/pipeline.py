"""Pipeline: research -> summarize -> fact-check -> format, each stage with typed output.

    research ─> summarize ─> fact_check ─(unsupported claims, revision left)─> summarize
                                 │
                                 └─> format_report

A stage that fails stops the run there; every stage before it is already in the checkpoint,
so `quorum resume` starts again at the failed stage.
"""

from __future__ import annotations

from typing import Literal

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from quorum.context import QuorumContext
from quorum.models import MODEL_RETRY
from quorum.nodes.pipeline import (
    FactCheck,
    ResearchNotes,
    Summary,
    fact_check,
    format_report,
    research,
    summarize,
)
from quorum.state import QuorumState


class PipelineState(QuorumState, total=False):
    """State of a pipeline run; `input` is the topic."""

    notes: ResearchNotes
    summary: Summary
    fact_check: FactCheck
    revisions: int
    """How many times the summary was revised after a fact-check."""


def route_after_fact_check(
    state: PipelineState, runtime: Runtime[QuorumContext]
) -> Literal["summarize", "format_report"]:
    """Send the summary back once more if claims are unsupported and revisions are left."""
    check = state["fact_check"]
    if check.unsupported_claims and state.get("revisions", 0) < runtime.context.max_revisions:
        return "summarize"
    return "format_report"


builder = StateGraph(PipelineState, context_schema=QuorumContext)
builder.add_node(research, retry_policy=MODEL_RETRY)
builder.add_node(summarize, retry_policy=MODEL_RETRY)
builder.add_node(fact_check, retry_policy=MODEL_RETRY)
builder.add_node(format_report, retry_policy=MODEL_RETRY)
builder.add_edge(START, "research")
builder.add_edge("research", "summarize")
builder.add_edge("summarize", "fact_check")
builder.add_conditional_edges("fact_check", route_after_fact_check)
builder.add_edge("format_report", END)

graph = builder.compile(name="pipeline")
