"""A calculator tool: arithmetic and common math functions, parsed and never `eval`-ed."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

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
_FUNCTIONS: dict[str, Callable[..., float]] = {
    name: getattr(math, name)
    for name in (
        "sqrt", "exp", "log", "log10", "log2", "sin", "cos", "tan", "asin", "acos", "atan",
        "floor", "ceil", "factorial",
    )
} | {"abs": abs, "round": round, "min": min, "max": max}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}
_MAX_EXPONENT = 10_000
_MAX_LENGTH = 500


class Calculation(BaseModel):
    """The result of a calculation."""

    expression: str = Field(description="The expression as given.")
    value: float | int = Field(description="Its value.")


@agent_tool()
async def calculator(expression: str) -> Calculation:
    """Evaluate an arithmetic expression exactly, instead of doing the math in your head.

    Use for: arithmetic, percentages, powers, roots, logarithms and trigonometry, with
    + - * / // % ** and sqrt, exp, log, log10, log2, sin, cos, tan, asin, acos, atan, floor,
    ceil, factorial, abs, round, min, max, and the constants pi, e and tau.
    Do not use for: unit conversion, dates, or anything that is not a number.
    Example: calculator(expression="(1200 * 0.15) + sqrt(16)")
    """
    if len(expression) > _MAX_LENGTH:
        raise ToolError(
            f"expression is longer than {_MAX_LENGTH} characters",
            retryable=False,
            suggestion="split the calculation into smaller steps",
        )
    try:
        tree = ast.parse(expression.strip(), mode="eval")
        value = _evaluate(tree.body)
    except ToolError:
        raise
    except (SyntaxError, TypeError, ValueError, ZeroDivisionError, OverflowError) as error:
        raise ToolError(
            f"cannot evaluate {expression!r}: {error}",
            retryable=False,
            suggestion="write a plain arithmetic expression, e.g. '2 * (3 + 4)'",
        ) from error
    return Calculation(expression=expression, value=value)


def _evaluate(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
            raise ValueError(f"exponent {right} is too large")
        return _BINARY[type(node.op)](left, right)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        args = [_evaluate(arg) for arg in node.args]
        if node.func.id == "factorial" and args and abs(args[0]) > 1000:
            raise ValueError("factorial argument is too large")
        return _FUNCTIONS[node.func.id](*args)
    raise ValueError(f"unsupported element {ast.dump(node)[:60]}")


TOOLS = [calculator]
