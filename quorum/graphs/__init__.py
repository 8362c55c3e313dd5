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

ANSWER_WRITERS: dict[str, str] = {
    "orchestrator": "synthesizer",
    "pipeline": "format_report",
    "react": "agent",
}
"""The agent whose prose reply is each pattern's answer, as it writes it (a terminal streams
it). A debate's answer is a field of the judge's verdict: none writes it as prose."""
