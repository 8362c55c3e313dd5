"""The four patterns, one module each; `PATTERNS` maps a pattern's name to its builder."""

from __future__ import annotations

from langgraph.graph import StateGraph

from quorum.graphs import debate, orchestrator, pipeline, react

PATTERNS: dict[str, StateGraph] = {
    "orchestrator": orchestrator.builder,
    "pipeline": pipeline.builder,
    "debate": debate.builder,
    "react": react.builder,
}
