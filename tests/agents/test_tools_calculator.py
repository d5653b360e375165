"""The calculator tool: arithmetic is right, every known sandbox-escape payload is refused.

Each payload that would have an effect if it ran tries to create a marker file; the test
checks the refusal *and* that the marker does not exist. Expected values of generated
expressions are computed from the generated tree, not by evaluating its text.
"""

from __future__ import annotations

import math
import operator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feldspar.agents.builtin_tools import calculator_tool
from feldspar.agents.calculator import MAX_INT_BITS
from feldspar.agents.tools import run_tool

CALCULATOR = calculator_tool()

# {marker} is replaced by a path the payload would create if it ever ran.
ESCAPE_PAYLOADS = [
    "__import__('os').system('touch {marker}')",
    "__import__('pathlib').Path('{marker}').touch()",
    "open('{marker}', 'w').write('x')",
    "eval(\"open('{marker}', 'w')\")",
    "exec(\"open('{marker}', 'w')\")",
    "compile('1', 'x', 'eval')",
    "().__class__.__bases__[0].__subclasses__()",
    "[].__class__.__mro__[1].__subclasses__()",
    "(1).__class__.__base__.__subclasses__()",
    "''.__class__.__mro__[-1].__subclasses__()",
    "sqrt.__self__.__dict__['__loader__']",
    "getattr(sqrt, '__globals__')",
    "globals()['__builtins__']",
    "__builtins__.open('{marker}', 'w')",
    "(lambda: __import__('os').system('touch {marker}'))()",
    "[c for c in ().__class__.__base__.__subclasses__()]",
    "{x: 1 for x in (1,)}",
    "(x for x in (1,))",
    "f\"{{__import__('os').system('touch {marker}')}}\"",
    "(y := __import__('os'))",
    "breakpoint()",
    "type(1)",
    "vars()",
    "print(1)",
    "ｅval('1')",  # full-width e: identifiers are NFKC-normalised to eval
    "sqrt(*[4])",
    "sqrt(x=4)",
    "max(range(10**12))",
    "(1).real",
    "math.sqrt(4)",
    "'a' * 10**9",
    "b'x'",
    "1 if 1 else __import__('os')",
    "1 < 2",
    "~1",
    "1 << 100000",
    "1 & 3",
    "9**9**9",
    "10**10**10",
    "2**100000",
    "2.0**10**1000",
    "round(5, -10**50)",
    "-" * 400 + "1",
    "(" * 300 + "1" + ")" * 300,
    "1" + "+1" * 600,
    "1\x00+1",
    "1; __import__('os')",
    "import os",
    "1e999",
    "1j ** 2",
]


@pytest.mark.parametrize("payload", ESCAPE_PAYLOADS)
def test_escape_payload_is_refused_and_has_no_effect(payload, tmp_path):
    marker = tmp_path / "escaped"
    outcome = run_tool(CALCULATOR, {"expression": payload.replace("{marker}", str(marker))})
    assert outcome.error is not None and outcome.result is None
    assert not marker.exists()


def test_there_are_enough_payloads():
    assert len(ESCAPE_PAYLOADS) >= 15


@pytest.mark.parametrize("expression, expected", [
    ("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("7 // 2", 3), ("-7 // 2", -4), ("-7 % 3", 2), ("7 / 2", 3.5),
    ("2 ** 10", 1024), ("2 ** -1", 0.5), ("-2 ** 2", -4), ("+-+3", -3), ("sqrt(16)", 4.0), ("abs(-3)", 3),
    ("round(2.567, 2)", 2.57), ("max(1, 5, 3)", 5), ("min(4, 2)", 2), ("floor(2.7)", 2), ("ceil(2.1)", 3),
    ("log10(1000)", 3.0), ("2 * pi", 2 * math.pi), ("e", math.e), ("1_000_000 + 1", 1_000_001),
    ("0x10 + 0b11", 19), ("1e3 / 4", 250.0), ("2 ** 3000", 2 ** 3000),
])
def test_arithmetic_is_right(expression, expected):
    assert run_tool(CALCULATOR, {"expression": expression}).value == expected


@pytest.mark.parametrize("expression, error", [
    ("1 / 0", "division by zero"), ("5 % 0", "division by zero"), ("0 ** -1", "division by zero"),
    ("sqrt(-1)", "sqrt() failed: math domain error"), ("(-8) ** (1 / 3)", "the result is not a real number"),
    ("1e308 * 10", "the result is not a finite number"), ("exp(1000)", "exp() failed: math range error"),
    ("2 ** 3400", f"the result is too large (more than {MAX_INT_BITS} bits)"), ("", "String should have at least 1"),
    ("sqrt", "sqrt is a function; call it like sqrt(2)"), ("sqrt()", "sqrt() takes 1 to 8 arguments"),
    ("x + 1", "unknown name 'x'"), ("1 +", "not an arithmetic expression"),
])
def test_bad_arithmetic_is_a_clear_error(expression, error):
    assert error in run_tool(CALCULATOR, {"expression": expression}).error


def test_an_expression_over_the_length_limit_is_refused_before_parsing():
    outcome = run_tool(CALCULATOR, {"expression": "1+" * 300 + "1"})
    assert "expression: String should have at most 500 characters" in outcome.error


OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "//": operator.floordiv, "%": operator.mod}


def expressions(depth: int = 4):
    """``(text, value)`` pairs of integer arithmetic trees with exact expected values."""
    leaf = st.integers(-10**6, 10**6).map(lambda n: (f"({n})", n))

    def combine(children):
        def join(pair):
            (left, lvalue), symbol, (right, rvalue) = pair
            if symbol in ("//", "%") and rvalue == 0:
                return left, lvalue
            return f"({left} {symbol} {right})", OPERATORS[symbol](lvalue, rvalue)
        return st.tuples(children, st.sampled_from(sorted(OPERATORS)), children).map(join)

    return st.recursive(leaf, combine, max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(expressions())
def test_generated_integer_arithmetic_is_exact(case):
    text, expected = case
    if len(text) > 500:
        return
    assert run_tool(CALCULATOR, {"expression": text}).value == expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80) | st.text(alphabet="0123456789+-*/%().e_ ,sqrtpiabs", max_size=80))
def test_any_text_gives_a_number_or_an_error_never_an_exception(text):
    outcome = run_tool(CALCULATOR, {"expression": text})
    assert (outcome.error is None) == isinstance(outcome.value, (int, float))
