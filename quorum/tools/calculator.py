"""A calculator tool: arithmetic and common math functions, parsed and never `eval`-ed.

The expression is parsed with `ast` and walked over an allowlist of operators, functions
and constants. Every step is bounded before it runs, since a coroutine stuck in a huge
integer power cannot be cancelled: integers stay under `_MAX_BITS`, factorials and
`round` digits under small limits, and a result must be a finite real number.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, Field

from quorum.tools.contract import ToolError, agent_tool

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    name: getattr(math, name)
    for name in (
        "sqrt", "exp", "log", "log10", "log2", "sin", "cos", "tan", "asin", "acos", "atan",
        "floor", "ceil", "factorial",
    )
} | {"abs": abs, "round": round, "min": min, "max": max}  # fmt: skip
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}
_MAX_LENGTH = 500
_MAX_BITS = 10_000
"""Largest integer kept exact, about 3,000 digits; the operations below stay fast under it."""
_MAX_FACTORIAL = 1000
_MAX_ROUND_DIGITS = 100
_EXACT_LIMIT = 10**30
"""Integer results beyond this are given as floats: a model cannot use 4,000 digits."""


class Calculation(BaseModel):
    """The result of a calculation."""

    expression: str = Field(description="The expression as given.")
    value: float | int = Field(description="Its value.")


@agent_tool(timeout=10.0)
async def calculator(
    expression: Annotated[
        str,
        Field(max_length=_MAX_LENGTH, description="An arithmetic expression, e.g. '2 * (3 + 4)'."),
    ],
) -> Calculation:
    """Evaluate an arithmetic expression exactly, instead of doing the math in your head.

    Use for: arithmetic, percentages, powers, roots, logarithms and trigonometry, with
    + - * / // % ** and sqrt, exp, log, log10, log2, sin, cos, tan, asin, acos, atan, floor,
    ceil, factorial, abs, round, min, max, and the constants pi, e and tau.
    Do not use for: unit conversion, dates, or anything that is not a number.
    Example: calculator(expression="(1200 * 0.15) + sqrt(16)")
    """
    try:
        tree = ast.parse(expression.strip(), mode="eval")
        value = _result(_evaluate(tree.body))
    except (
        SyntaxError,
        TypeError,
        ValueError,
        ZeroDivisionError,
        OverflowError,
        RecursionError,
        MemoryError,
    ) as error:
        raise ToolError(
            f"cannot evaluate {expression[:200]!r}: {str(error)[:200]}",
            retryable=False,
            suggestion="write a plain arithmetic expression, e.g. '2 * (3 + 4)', "
            "or split the calculation into smaller steps",
        ) from error
    return Calculation(expression=expression, value=value)


def _result(value: Any) -> float | int:
    if isinstance(value, int) and abs(value) >= _EXACT_LIMIT:
        if value.bit_length() > 1023:
            raise ValueError(f"the result has {len(str(value))} digits, too many to use")
        value = float(value)
    if not isinstance(value, int | float):
        raise ValueError(f"the result {type(value).__name__} is not a real number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("the result is not finite")
    return value


def _evaluate(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _bounded(node.value)
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        return _bounded(_BINARY[type(node.op)](left, right))
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        args = [_evaluate(arg) for arg in node.args]
        _check_call(node.func.id, args)
        return _bounded(_FUNCTIONS[node.func.id](*args))
    raise ValueError(f"unsupported element {ast.dump(node)[:60]}")


def _bounded(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > _MAX_BITS:
        raise ValueError("a number in the calculation is too large")
    if isinstance(value, complex):
        raise ValueError("the calculation leaves the real numbers")
    return value


def _check_power(base: Any, exponent: Any) -> None:
    # Only an integer power can grow without limit before returning; a float one overflows.
    if isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1:
        if exponent.bit_length() > 32 or base.bit_length() * exponent > _MAX_BITS:
            raise ValueError("the power is too large")


def _check_call(name: str, args: list[Any]) -> None:
    if name == "factorial" and args and isinstance(args[0], int) and args[0] > _MAX_FACTORIAL:
        raise ValueError(f"factorial is limited to {_MAX_FACTORIAL}")
    if name == "round" and len(args) == 2 and isinstance(args[1], int):
        # round(x, -n) on an integer computes 10**n first.
        if abs(args[1]) > _MAX_ROUND_DIGITS:
            raise ValueError(f"round keeps at most {_MAX_ROUND_DIGITS} digits")


TOOLS = [calculator]
