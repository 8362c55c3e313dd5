"""Pipeline: research -> summarize -> fact-check -> format, each stage with typed output.

    research ─> summarize ─> fact_check ─(unsupported claims, revision left)─> summarize
                                 │
                                 └─> format_report

Research and fact-check consult tools: each is a tool-use subgraph (brief -> act <-> tool ->
typed answer), so every tool call is its own checkpointed step. A stage that fails stops
the run there; every stage before it is already in the checkpoint, so `quorum resume`
starts again at the failed stage.
"""

from __future__ import annotations

from typing import Literal

from langgraph.graph import END, START
from langgraph.runtime import Runtime

from quorum.context import QuorumContext
from quorum.graphs.pattern import Pattern
from quorum.graphs.tool_loop import tool_loop
from quorum.nodes.pipeline import (
    fact_check_brief,
    fact_check_verdict,
    format_report,
    research_brief,
    research_notes,
    summarize,
)
from quorum.state import (
    FactCheckInput,
    FactCheckOutput,
    FactCheckState,
    PipelineInput,
    PipelineOutput,
    PipelineState,
    ResearchInput,
    ResearchOutput,
    ResearchState,
)


def route_after_fact_check(
    state: PipelineState, runtime: Runtime[QuorumContext]
) -> Literal["summarize", "format_report"]:
    """Send the summary back once more if claims are unsupported and revisions are left."""
    check = state["fact_check"]
    if check.unsupported_claims and state.get("revisions", 0) < runtime.context.max_revisions:
        return "summarize"
    return "format_report"


research = tool_loop(
    "research",
    state=ResearchState,
    input_schema=ResearchInput,
    output_schema=ResearchOutput,
    brief=research_brief,
    finish=research_notes,
    finish_asks_model=True,
)
fact_check = tool_loop(
    "fact_check",
    state=FactCheckState,
    input_schema=FactCheckInput,
    output_schema=FactCheckOutput,
    brief=fact_check_brief,
    finish=fact_check_verdict,
    finish_asks_model=True,
)

builder = Pattern(
    "pipeline", PipelineState, input_schema=PipelineInput, output_schema=PipelineOutput
)
builder.add_node("research", research)
builder.add_agent(summarize)
builder.add_node("fact_check", fact_check)
builder.add_agent(format_report)
builder.add_edge(START, "research")
builder.add_edge("research", "summarize")
builder.add_edge("summarize", "fact_check")
builder.add_conditional_edges("fact_check", route_after_fact_check)
builder.add_edge("format_report", END)

graph = builder.compile()
