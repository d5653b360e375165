"""Lenient readers for tool calls a small model wrote in the wrong shape.

Used by model/toolcalls.py only when tools are declared. Reads, never runs: Python-style
calls (``get_weather(city="Paris")``, a list of them, one per line) and dict literals with
single quotes, trailing commas or Python's True/False/None are read with ``ast.parse`` and
a walker that accepts literals only (strings, numbers, booleans, None, lists, dicts); any
other node (a name lookup, an attribute, an operator, a call inside an argument) makes the
text "not a call". No ``eval``/``exec``/``literal_eval`` of model text; sizes and nesting
are bounded, and every failure is a ``NotACall`` the caller turns into text or an error.
Knows Python syntax trees and JSON; nothing of which tools exist.
"""

from __future__ import annotations

import ast
import io
import json
import tokenize
import warnings
from dataclasses import dataclass, field
from typing import Any

MAX_CHARS = 20_000  # longer bodies are not read leniently
MAX_DEPTH = 48
_NAMED_CONSTANTS = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}


class NotACall(ValueError):
    """The text is not a call or literal this module can read."""


@dataclass
class PythonCall:
    """``name(*positional, **keywords)`` with literal arguments."""

    name: str
    positional: list[Any]
    keywords: dict[str, Any]
    raw: str
    repairs: list[str] = field(default_factory=list)


@dataclass
class LiteralObject:
    """A dict literal that should be a ``{"name": ..., "arguments": ...}`` call object."""

    value: Any
    raw: str
    repairs: list[str] = field(default_factory=list)


def without_trailing_commas(text: str) -> str | None:
    """``text`` with commas before ``}`` or ``]`` removed (outside JSON strings); None if none."""
    if len(text) > MAX_CHARS:
        return None
    out: list[str] = []
    in_string = escaped = changed = False
    for i, char in enumerate(text):
        if in_string:
            out.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char == "," and _next_visible(text, i + 1) in ("}", "]"):
            changed = True
            continue
        out.append(char)
    return "".join(out) if changed else None


def _next_visible(text: str, start: int) -> str:
    for char in text[start:start + 200]:
        if not char.isspace():
            return char
    return ""


def read_python(body: str) -> list[PythonCall | LiteralObject]:
    """Calls and dict literals in ``body``: one expression, a list/tuple of them, or one per line."""
    text = body.strip()
    if not text or len(text) > MAX_CHARS:
        raise NotACall("empty or too long")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(text, mode="exec")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        raise NotACall(f"not Python syntax: {exc.__class__.__name__}") from None
    if not tree.body or not all(isinstance(stmt, ast.Expr) for stmt in tree.body):
        raise NotACall("not a list of expressions")
    repairs = literal_repairs(text)
    items: list[PythonCall | LiteralObject] = []
    for stmt in tree.body:
        items += _items(stmt.value, text, repairs)
    return items


def _items(node: ast.expr, source: str, repairs: list[str]) -> list[PythonCall | LiteralObject]:
    if isinstance(node, (ast.List, ast.Tuple)) and node.elts and all(isinstance(e, (ast.Call, ast.Dict)) for e in node.elts):
        return [item for element in node.elts for item in _items(element, source, repairs)]
    raw = ast.get_source_segment(source, node) or source
    if isinstance(node, ast.Call):
        return [_call(node, raw, repairs)]
    if isinstance(node, ast.Dict):
        return [LiteralObject(literal(node), raw, list(repairs))]
    raise NotACall("not a call or a dict")


def _call(node: ast.Call, raw: str, repairs: list[str]) -> PythonCall:
    name = dotted_name(node.func)
    if any(isinstance(arg, ast.Starred) for arg in node.args) or any(k.arg is None for k in node.keywords):
        raise NotACall("*args / **kwargs in a call")
    found: list[str] = []
    positional = [literal(arg, unquoted=found) for arg in node.args]
    keywords = {k.arg: literal(k.value, unquoted=found) for k in node.keywords if k.arg is not None}
    extra = ["unquoted_strings"] if found else []
    return PythonCall(name, positional, keywords, raw, ["python_call", *repairs, *extra])


def dotted_name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted_name(node.value)}.{node.attr}"
    raise NotACall("the called thing is not a name")


def literal(node: ast.expr, depth: int = 0, unquoted: list[str] | None = None) -> Any:
    """The value of a literal node; bare names become strings only where ``unquoted`` is given."""
    if depth > MAX_DEPTH:
        raise NotACall("nested too deeply")
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool, type(None))):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in _NAMED_CONSTANTS:
            return _NAMED_CONSTANTS[node.id]
        if unquoted is not None:
            unquoted.append(node.id)
            return node.id
        raise NotACall(f"bare name {node.id!r}")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = literal(node.operand, depth + 1)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise NotACall("sign on a non-number")
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [literal(e, depth + 1, unquoted) for e in node.elts]
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise NotACall("** inside a dict")
        keys = [literal(k, depth + 1) for k in node.keys]
        if not all(isinstance(k, str) for k in keys):
            raise NotACall("a dict key is not a string")
        return {k: literal(v, depth + 1, unquoted) for k, v in zip(keys, node.values)}
    raise NotACall(f"{node.__class__.__name__} is not a literal")


def literal_repairs(text: str) -> list[str]:
    """Which JSON deviations ``text`` has: single_quotes, trailing_commas, python_literals."""
    found: list[str] = []
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(text).readline)
                  if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT)]
    except (tokenize.TokenError, SyntaxError, ValueError):
        return found
    for current, following in zip(tokens, tokens[1:] + tokens[-1:]):
        if current.type == tokenize.STRING and current.string.lstrip("rRbBuUfF")[:1] == "'":
            found.append("single_quotes")
        elif current.type == tokenize.NAME and current.string in ("True", "False", "None"):
            found.append("python_literals")
        elif current.string == "," and following is not current and following.string in ("}", "]", ")"):
            found.append("trailing_commas")
    return list(dict.fromkeys(found))


def loads_json(text: str) -> tuple[Any, list[str]]:
    """Strict JSON, else JSON with trailing commas removed; raises ``json.JSONDecodeError``."""
    try:
        return json.loads(text), []
    except json.JSONDecodeError:
        fixed = without_trailing_commas(text)
        if fixed is None:
            raise
        return json.loads(fixed), ["trailing_commas"]
