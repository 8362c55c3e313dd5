"""Scoring a structured answer against the expected one.

Four kinds, chosen per question: `exact` (the same text, ignoring case, surrounding space and
a final full stop), `numeric` (the same number within an absolute `tolerance`; "1,234" and
"42.0" are numbers), `regex` (the expected answer is a pattern the whole answer must match,
ignoring case) and `one_of` (exactly one of a list of accepted answers). The answer checked
is the `answer` field of the model's structured reply, never text picked out of prose.
"""

from __future__ import annotations

import math
import re
from typing import Literal

CheckerKind = Literal["exact", "numeric", "regex", "one_of"]
CHECKERS: tuple[CheckerKind, ...] = ("exact", "numeric", "regex", "one_of")


def normalize(text: str) -> str:
    """Text as compared: case-folded, whitespace collapsed, no final full stop."""
    return " ".join(text.split()).casefold().removesuffix(".").strip()


def as_number(text: str) -> float | None:
    """The number `text` is (thousands separators allowed), or None if it is not one."""
    try:
        value = float(normalize(text).replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def canonical(text: str) -> str:
    """One spelling per answer, so that votes for "42", "42.0" and "42." count together."""
    number = as_number(text)
    if number is None:
        return normalize(text)
    return str(int(number)) if number.is_integer() else repr(number)


def check(
    kind: CheckerKind, expected: str | list[str], answer: str, *, tolerance: float = 0.0
) -> bool:
    """Whether `answer` is right under checker `kind`."""
    if kind == "one_of":
        accepted = expected if isinstance(expected, list) else [expected]
        return normalize(answer) in {normalize(e) for e in accepted}
    if isinstance(expected, list):
        raise ValueError(f"checker {kind!r} takes one expected answer, not a list")
    if kind == "exact":
        return normalize(answer) == normalize(expected)
    if kind == "numeric":
        got, want = as_number(answer), as_number(expected)
        if want is None:
            raise ValueError(f"numeric checker: expected answer {expected!r} is not a number")
        return got is not None and abs(got - want) <= tolerance
    return re.fullmatch(expected, answer.strip(), flags=re.IGNORECASE) is not None
