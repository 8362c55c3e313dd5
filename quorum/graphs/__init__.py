"""The four patterns, one module each; `PATTERNS` maps a pattern's name to its builder."""

from __future__ import annotations

from typing import Any

from langgraph.graph import StateGraph

from quorum.context import QuorumContext
from quorum.graphs import debate, orchestrator, pipeline, react

PATTERNS: dict[str, StateGraph[Any, QuorumContext, Any, Any]] = {
    "orchestrator": orchestrator.builder,
    "pipeline": pipeline.builder,
    "debate": debate.builder,
    "react": react.builder,
}
