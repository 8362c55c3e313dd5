"""Accuracy intervals and the paired comparison of two strategies on the same questions.

Wilson's score interval is used for accuracy because it stays inside [0, 1] and keeps its
coverage for small samples and accuracies near 0 or 1, where the normal approximation fails.
Two strategies answering the same questions are compared with McNemar's exact test: only
the discordant questions (one right, the other wrong) carry information, and under "no
difference" each discordant question is a fair coin, so the two-sided p-value is an exact
binomial tail, computed here with `math.comb` (no approximation, no extra dependency).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z_95 = 1.959963984540054
"""The standard normal quantile for a two-sided 95% interval."""

SIGNIFICANCE = 0.05


def wilson(correct: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for `correct` successes out of `total` (0, 0 when there are none)."""
    if total == 0:
        return 0.0, 0.0
    p = correct / total
    centre = p + z * z / (2 * total)
    spread = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    denominator = 1 + z * z / total
    # At 0 or all correct one bound is exactly 0 or 1; rounding must not move it inside.
    low = 0.0 if correct == 0 else (centre - spread) / denominator
    high = 1.0 if correct == total else (centre + spread) / denominator
    return low, high


@dataclass(frozen=True)
class Paired:
    """A strategy against the baseline on the questions both answered."""

    questions: int
    """Questions both were measured on."""
    only_baseline: int
    """Questions the baseline got right and the strategy wrong."""
    only_strategy: int
    """Questions the strategy got right and the baseline wrong."""
    p_value: float
    """Two-sided exact McNemar p-value."""

    @property
    def significant(self) -> bool:
        """Whether the difference is significant at the 5% level."""
        return self.p_value < SIGNIFICANCE


def mcnemar_exact(only_baseline: int, only_strategy: int) -> float:
    """Two-sided exact McNemar p-value from the two discordant counts."""
    discordant = only_baseline + only_strategy
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(only_baseline, only_strategy) + 1))
    return min(1.0, 2 * tail / 2**discordant)


def paired(baseline: list[bool], strategy: list[bool]) -> Paired:
    """Compare `strategy` with `baseline`, question by question (same order, same questions)."""
    if len(baseline) != len(strategy):
        raise ValueError("a paired comparison needs the same questions on both sides")
    only_baseline = sum(1 for b, s in zip(baseline, strategy, strict=True) if b and not s)
    only_strategy = sum(1 for b, s in zip(baseline, strategy, strict=True) if s and not b)
    return Paired(
        len(baseline), only_baseline, only_strategy, mcnemar_exact(only_baseline, only_strategy)
    )
