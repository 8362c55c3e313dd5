"""`quorum eval`: each pattern's accuracy, tokens, cost and time, side by side.

Strategies answer questions with exact answers, and the answers are scored and compared.
`questions` builds or loads a question set, `checkers` scores an answer, `strategies` are the
graphs that answer one question (a single call, self-consistency, or a pattern followed by a
structured final answer), `harness` runs every question on its own durable thread,
`statistics` gives intervals and the paired test, and `report` prints, saves and draws it.
"""

from __future__ import annotations

from quorum.evals.harness import EvalResult, QuestionResult, run_eval
from quorum.evals.questions import Question, arithmetic, load_jsonl, word_problems
from quorum.evals.strategies import STRATEGIES

__all__ = [
    "STRATEGIES",
    "EvalResult",
    "Question",
    "QuestionResult",
    "arithmetic",
    "load_jsonl",
    "run_eval",
    "word_problems",
]
