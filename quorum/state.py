"""State shared by every pattern: the input, the output and the per-agent usage ledger.

Each pattern's state extends `QuorumState`, so the CLI, the Python API and Studio find a
run's input and answer under the same keys, and token usage is recorded per agent in the
checkpoint (later budgets and cost reports read it from there).
"""

from __future__ import annotations

from typing import Annotated

from typing_extensions import TypedDict


class Usage(TypedDict):
    """What one agent has spent so far."""

    calls: int
    input_tokens: int
    output_tokens: int


def add_usage(left: dict[str, Usage] | None, right: dict[str, Usage] | None) -> dict[str, Usage]:
    """Reducer: sum usage per agent, so parallel workers can each report their own."""
    merged = dict(left or {})
    for agent, usage in (right or {}).items():
        seen = merged.get(agent)
        merged[agent] = (
            Usage(
                calls=seen["calls"] + usage["calls"],
                input_tokens=seen["input_tokens"] + usage["input_tokens"],
                output_tokens=seen["output_tokens"] + usage["output_tokens"],
            )
            if seen
            else usage
        )
    return merged


def total_tokens(usage: dict[str, Usage]) -> int:
    """Input plus output tokens over every agent."""
    return sum(u["input_tokens"] + u["output_tokens"] for u in usage.values())


class QuorumState(TypedDict, total=False):
    """Keys every pattern has."""

    input: str
    """The goal, topic, question or task the run was given."""
    output: str
    """The final answer, as markdown."""
    usage: Annotated[dict[str, Usage], add_usage]
    """Model calls and tokens per agent."""
