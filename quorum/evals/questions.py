"""Question sets with exact answers: generated from a seed, or loaded from a JSONL file.

Generated sets are reproducible (the same seed gives the same questions) and their answers
are computed, never written by hand:
- `arithmetic`: multi-step integer arithmetic in the form Du et al. (2023) used to evaluate
  multi-agent debate, `a+b*c+d-e*f` with operands 0-30;
- `word_problems`: short word problems (shopping, sharing, travel) whose answers are computed
  from the drawn numbers.

A JSONL file has one question a line: `{"question": ..., "answer": ..., "checker": ...}` with
`checker` one of exact (default), numeric (with `tolerance`), regex (the answer is a pattern)
or one_of (the answer is a list of accepted answers).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from quorum.errors import UsageError
from quorum.evals.checkers import CheckerKind, as_number, check
from quorum.state import AnswerKind


@dataclass(frozen=True)
class Question:
    """One question, its expected answer and how an answer is checked."""

    question: str
    answer: str | list[str]
    checker: CheckerKind = "exact"
    tolerance: float = 0.0

    @property
    def kind(self) -> AnswerKind:
        """What its answer is: a number for the numeric checker, text for the others."""
        return "number" if self.checker == "numeric" else "text"

    def is_well_formed(self, answer: str) -> bool:
        """Whether `answer` is an answer of this question's kind at all (right or wrong)."""
        if self.kind == "number":
            return as_number(answer) is not None
        return bool(answer.strip())

    def is_correct(self, answer: str) -> bool:
        """Whether `answer` (a final answer taken out of a working) is right."""
        return check(self.checker, self.answer, answer, tolerance=self.tolerance)


def arithmetic(count: int, seed: int = 0) -> list[Question]:
    """`count` questions `a+b*c+d-e*f` with operands drawn from 0-30 (Du et al. 2023)."""
    rng = random.Random(seed)
    questions = []
    for _ in range(count):
        a, b, c, d, e, f = (rng.randint(0, 30) for _ in range(6))
        questions.append(
            Question(
                question=f"What is the result of {a}+{b}*{c}+{d}-{e}*{f}?",
                answer=str(a + b * c + d - e * f),
                checker="numeric",
            )
        )
    return questions


WordProblem = Callable[[random.Random], tuple[str, int]]


def _shopping(rng: random.Random) -> tuple[str, int]:
    have, bags, each = rng.randint(2, 20), rng.randint(2, 6), rng.randint(2, 12)
    given = rng.randint(1, have)
    return (
        f"Mia has {have} apples. She buys {bags} bags with {each} apples in each bag, then "
        f"gives {given} apples to a friend. How many apples does Mia have now?",
        have + bags * each - given,
    )


def _sharing(rng: random.Random) -> tuple[str, int]:
    friends, each, extra = rng.randint(2, 9), rng.randint(2, 15), rng.randint(1, 20)
    return (
        f"A baker bakes some cookies and shares them equally among {friends} friends, each "
        f"getting {each} cookies, with {extra} cookies left over. How many cookies did the "
        "baker bake?",
        friends * each + extra,
    )


def _travel(rng: random.Random) -> tuple[str, int]:
    speed, hours, back = rng.randint(20, 90), rng.randint(2, 6), rng.randint(5, 60)
    return (
        f"A train travels at {speed} km per hour for {hours} hours, then goes back {back} km. "
        "How many km is it from where it started?",
        speed * hours - back,
    )


def _savings(rng: random.Random) -> tuple[str, int]:
    weekly, weeks, spent = rng.randint(3, 25), rng.randint(3, 12), rng.randint(1, 30)
    start = rng.randint(0, 50)
    return (
        f"Sam has ${start} and saves ${weekly} every week for {weeks} weeks, then spends "
        f"${spent} on a book. How many dollars does Sam have?",
        start + weekly * weeks - spent,
    )


WORD_PROBLEMS: tuple[WordProblem, ...] = (_shopping, _sharing, _travel, _savings)


def word_problems(count: int, seed: int = 0) -> list[Question]:
    """`count` short word problems with computed integer answers."""
    rng = random.Random(seed)
    questions = []
    for index in range(count):
        text, answer = WORD_PROBLEMS[index % len(WORD_PROBLEMS)](rng)
        questions.append(Question(question=text, answer=str(answer), checker="numeric"))
    return questions


GENERATED: dict[str, Callable[[int, int], list[Question]]] = {
    "arithmetic": arithmetic,
    "word": word_problems,
}
"""The built-in question sets by name."""


class _Line(BaseModel):
    """One line of a question file."""

    model_config = ConfigDict(extra="forbid")

    question: Annotated[str, Field(min_length=1)]
    answer: str | int | float | list[str]
    checker: CheckerKind = "exact"
    tolerance: Annotated[float, Field(ge=0)] = 0.0

    @model_validator(mode="after")
    def _fits_checker(self) -> _Line:
        if isinstance(self.answer, list) != (self.checker == "one_of"):
            raise ValueError("checker one_of takes a list of answers; the others take one answer")
        return self


def load_jsonl(path: Path) -> list[Question]:
    """The questions of a JSONL file; a bad line is an error naming its number."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read question file {path}: {error}") from None
    questions = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            parsed = _Line.model_validate(json.loads(line))
            question = Question(
                question=parsed.question,
                answer=parsed.answer if isinstance(parsed.answer, list) else str(parsed.answer),
                checker=parsed.checker,
                tolerance=parsed.tolerance,
            )
            question.is_correct("")  # an expected answer the checker cannot use fails here
        except json.JSONDecodeError as error:
            raise _bad_line(path, number, f"not valid JSON ({error.msg})") from None
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'line'}: {e['msg']}" for e in error.errors()
            )
            raise _bad_line(path, number, problems) from None
        except (ValueError, re.error) as error:  # a bad regex, a non-numeric numeric answer
            raise _bad_line(path, number, str(error)) from None
        questions.append(question)
    if not questions:
        raise UsageError(f"question file {path} has no questions", hint=LINE_HINT)
    return questions


LINE_HINT = (
    'each line is a JSON object: {"question": "...", "answer": "...", "checker": '
    '"exact|numeric|regex|one_of", "tolerance": 0.01}; one_of takes a list of answers'
)


def _bad_line(path: Path, number: int, problem: str) -> UsageError:
    return UsageError(f"{path} line {number}: {problem}", hint=LINE_HINT)
