"""Safe arithmetic for the calculator tool: an AST whitelist, evaluated by our own walker.

The expression is parsed with ``ast.parse(mode="eval")``; before anything is computed the
whole tree is checked against a whitelist: numbers, ``+ - * / // % **``, unary ``+ -``,
parentheses, the constants ``pi e tau`` and a few math functions called by plain name
with positional arguments. Everything else (other names, attributes, subscripts,
strings, containers, comprehensions, lambdas, f-strings, keywords, walrus …) is refused
by node type. Sizes are bounded: input length, nesting depth, integer size in bits, the
size of a power (estimated before it is computed), and every result must be a finite
real number. Nothing here calls ``eval``, ``exec`` or ``compile``.

This module knows nothing of tools, agents or how results are shown.
"""

from __future__ import annotations

import ast
import math
import operator
from typing import Any, Callable

MAX_CHARS = 500
MAX_DEPTH = 60
MAX_INT_BITS = 3400  # about 1000 decimal digits
MAX_ARGS = 8
MAX_ROUND_DIGITS = 100

Number = int | float


class CalculatorError(ValueError):
    """The expression is not (safe) arithmetic, or its result is out of bounds."""


def _round(value: Number, digits: int = 0) -> Number:
    if not isinstance(digits, int) or abs(digits) > MAX_ROUND_DIGITS:
        raise CalculatorError(f"round() takes a whole number of digits between -{MAX_ROUND_DIGITS} and "
                              f"{MAX_ROUND_DIGITS}")
    return round(value, digits)


CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs, "round": _round, "min": min, "max": max, "sqrt": math.sqrt, "exp": math.exp,
    "log": math.log, "log10": math.log10, "log2": math.log2, "sin": math.sin, "cos": math.cos,
    "tan": math.tan, "asin": math.asin, "acos": math.acos, "atan": math.atan, "atan2": math.atan2,
    "floor": math.floor, "ceil": math.ceil, "hypot": math.hypot, "degrees": math.degrees,
    "radians": math.radians,
}
BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
ALLOWED_NODES = (ast.Expression, ast.Constant, ast.Name, ast.Load, ast.BinOp, ast.UnaryOp, ast.Call,
                 *BINARY, *UNARY)
REFUSED_WORDS = {
    ast.Attribute: "attribute access", ast.Subscript: "indexing", ast.Lambda: "lambda",
    ast.ListComp: "comprehensions", ast.SetComp: "comprehensions", ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions", ast.JoinedStr: "f-strings", ast.FormattedValue: "f-strings",
    ast.NamedExpr: "assignment", ast.Starred: "unpacking", ast.IfExp: "conditionals",
    ast.Compare: "comparisons", ast.BoolOp: "boolean operators", ast.List: "lists", ast.Tuple: "tuples",
    ast.Dict: "dicts", ast.Set: "sets", ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
    ast.Slice: "slices",
}
ALLOWED_SUMMARY = ("only numbers, + - * / // % **, parentheses, pi, e, tau and "
                   + ", ".join(sorted(FUNCTIONS)) + " are allowed")


def evaluate(expression: Any) -> Number:
    """The value of an arithmetic ``expression``; ``CalculatorError`` for anything else."""
    tree = _parse(expression)
    _check_tree(tree)
    return _finite(_eval(tree.body, 0))


def _parse(expression: Any) -> ast.Expression:
    if not isinstance(expression, str):
        raise CalculatorError("the expression must be text")
    text = expression.strip()
    if not text:
        raise CalculatorError("the expression is empty")
    if len(text) > MAX_CHARS:
        raise CalculatorError(f"the expression is longer than {MAX_CHARS} characters")
    try:
        return ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        reason = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
        raise CalculatorError(f"not an arithmetic expression ({reason})") from None


def _check_tree(tree: ast.Expression) -> None:
    """Refuse the whole expression if any node is outside the whitelist (nothing is computed yet)."""
    for node in ast.walk(tree):
        if not isinstance(node, ALLOWED_NODES):
            what = REFUSED_WORDS.get(type(node), type(node).__name__)
            raise CalculatorError(f"not allowed: {what}; {ALLOWED_SUMMARY}")
        if isinstance(node, ast.Constant) and (isinstance(node.value, bool)
                                               or not isinstance(node.value, (int, float))):
            raise CalculatorError(f"not allowed: {type(node.value).__name__} values; {ALLOWED_SUMMARY}")
        if isinstance(node, ast.Name) and node.id not in CONSTANTS and node.id not in FUNCTIONS:
            raise CalculatorError(f"unknown name {node.id[:40]!r}; {ALLOWED_SUMMARY}")
        if isinstance(node, ast.Call):
            _check_call(node)


def _check_call(node: ast.Call) -> None:
    if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
        raise CalculatorError(f"only these functions can be called: {', '.join(sorted(FUNCTIONS))}")
    if node.keywords:
        raise CalculatorError("keyword arguments are not allowed")
    if not node.args or len(node.args) > MAX_ARGS:
        raise CalculatorError(f"{node.func.id}() takes 1 to {MAX_ARGS} arguments")


def _eval(node: ast.AST, depth: int) -> Number:
    if depth > MAX_DEPTH:
        raise CalculatorError(f"the expression is nested more than {MAX_DEPTH} levels deep")
    if isinstance(node, ast.Constant):
        return _finite(node.value)
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise CalculatorError(f"{node.id} is a function; call it like {node.id}(2)")
    if isinstance(node, ast.UnaryOp):
        return _finite(UNARY[type(node.op)](_eval(node.operand, depth + 1)))
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, depth + 1), _eval(node.right, depth + 1)
        return _binary(type(node.op), left, right)
    if isinstance(node, ast.Call):
        args = [_eval(arg, depth + 1) for arg in node.args]
        return _call(node.func.id, args)  # type: ignore[attr-defined]
    raise CalculatorError(f"not allowed: {type(node).__name__}; {ALLOWED_SUMMARY}")


def _binary(op: type, left: Number, right: Number) -> Number:
    if op is ast.Pow:
        _check_power(left, right)
    try:
        value = BINARY[op](left, right)
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except OverflowError:
        raise CalculatorError("the result is too large") from None
    if isinstance(value, complex):
        raise CalculatorError("the result is not a real number")
    return _finite(value)


def _check_power(base: Number, exponent: Number) -> None:
    """Refuse a power whose integer result would exceed the size bound, before computing it."""
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 1 and abs(base) > 1:
        if (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS:
            raise CalculatorError(f"the result is too large (more than {MAX_INT_BITS} bits)")


def _call(name: str, args: list[Number]) -> Number:
    try:
        value = FUNCTIONS[name](*args)
    except CalculatorError:
        raise
    except (ValueError, TypeError, OverflowError, ZeroDivisionError) as exc:
        raise CalculatorError(f"{name}() failed: {exc}") from None
    return _finite(value)


def _bounded(value: Any) -> Number:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CalculatorError("the result is not a real number")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise CalculatorError(f"the result is too large (more than {MAX_INT_BITS} bits)")
    return value


def _finite(value: Any) -> Number:
    value = _bounded(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError("the result is not a finite number")
    return value
