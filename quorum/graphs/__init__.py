"""The four patterns, one module each; `PATTERNS` maps a pattern's name to its builder."""

from __future__ import annotations

from quorum.graphs import debate, orchestrator, pipeline, react
from quorum.graphs.pattern import Pattern

PATTERNS: dict[str, Pattern] = {
    "orchestrator": orchestrator.builder,
    "pipeline": pipeline.builder,
    "debate": debate.builder,
    "react": react.builder,
}
