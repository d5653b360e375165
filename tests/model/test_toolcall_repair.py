"""Tool calls in the wrong shape, recovered for declared tools only; errors the model can fix.

One property per test. Property tests: parsing never raises on any text with tools
declared, and the streamed visible text always adds up to exactly the parsed text.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from feldspar.model.toolcall_stream import VisibleText
from feldspar.model.toolcalls import ToolCall, ToolCallError, parse_assistant

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city"]}}},
    {"type": "function", "function": {"name": "calculator", "description": "Arithmetic.", "parameters": {
        "type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}},
]


def calls(text: str, tools=TOOLS):
    turn = parse_assistant(text, tools)
    return [(c.name, c.arguments) for c in turn.calls], turn


@pytest.mark.parametrize("text, expected, repairs", [
    ('get_weather(city="Paris")', [("get_weather", {"city": "Paris"})], ["python_call"]),
    ("[get_weather(city='Paris'), calculator(expression='2+2')]",
     [("get_weather", {"city": "Paris"}), ("calculator", {"expression": "2+2"})], ["python_call", "single_quotes"]),
    ('get_weather(city="Oslo")\ncalculator(expression="1")',
     [("get_weather", {"city": "Oslo"}), ("calculator", {"expression": "1"})], ["python_call"]),
    ('get_weather("Rome", unit="c")', [("get_weather", {"city": "Rome", "unit": "c"})],
     ["python_call", "positional_arguments"]),
    ("get_weather(city=Paris)", [("get_weather", {"city": "Paris"})], ["python_call", "unquoted_strings"]),
    ('<tool_call>get_weather(city="Paris")</tool_call>', [("get_weather", {"city": "Paris"})], ["python_call"]),
    ('```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```', [("get_weather", {"city": "Paris"})],
     ["code_fence"]),
    ("```\n{'name': 'calculator', 'arguments': {'expression': '3*3',},}\n```", [("calculator", {"expression": "3*3"})],
     ["code_fence", "single_quotes", "trailing_commas"]),
    ('{"name": "calculator", "arguments": {"expression": "1+1"}}', [("calculator", {"expression": "1+1"})],
     ["bare_json"]),
    ('<tool_call>{"name": "calculator", "arguments": {"expression": "1",}}</tool_call>',
     [("calculator", {"expression": "1"})], ["trailing_commas"]),
    ("<tool_call>{'name': 'calculator', 'arguments': {'expression': '1'}}</tool_call>",
     [("calculator", {"expression": "1"})], ["single_quotes"]),
    ('<tool_call>{"name": "calculator", "parameters": {"expression": "1"}}</tool_call>',
     [("calculator", {"expression": "1"})], ["parameters_key"]),
    ('<tool_call>{"type": "function", "function": {"name": "calculator", "arguments": {"expression": "1"}}}</tool_call>',
     [("calculator", {"expression": "1"})], ["function_wrapper"]),
    ('<tool_call>functions.calculator(expression="1")</tool_call>', [("calculator", {"expression": "1"})],
     ["python_call", "qualified_name"]),
    ('<tool_call>\n{"name": "calculator", "arguments": {"expression": "1"}}', [("calculator", {"expression": "1"})],
     ["unclosed_tag"]),
])
def test_wrong_shapes_are_recovered_and_named(text, expected, repairs):
    found, turn = calls(text)
    assert found == expected and turn.errors == [] and turn.text == ""
    assert turn.repairs == repairs


def test_the_well_formed_shape_needs_no_repair():
    found, turn = calls('<tool_call>\n{"name": "calculator", "arguments": {"expression": "2+2"}}\n</tool_call>')
    assert found == [("calculator", {"expression": "2+2"})] and turn.repairs == []


@pytest.mark.parametrize("text", [
    'print(city="Paris")',  # Python call of an undeclared function: prose or code, not a call
    "```python\nprint(get_weather)\n```",
    '```json\n{"name": "not_a_tool", "arguments": {}}\n```',
    '{"name": "someone", "age": 3}',
    "Use get_weather(city='Paris') to find out.",
    "[1, 2, 3]",
])
def test_undeclared_or_embedded_shapes_stay_text(text):
    found, turn = calls(text)
    assert found == [] and turn.errors == [] and turn.text == text.strip()


def test_nothing_is_recovered_without_declared_tools():
    for text in ('get_weather(city="Paris")', '```json\n{"name": "get_weather", "arguments": {}}\n```'):
        turn = parse_assistant(text)
        assert turn.calls == [] and turn.text == text


def test_text_around_a_fenced_call_is_kept():
    found, turn = calls('Let me check.\n```json\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n```\nOne moment.')
    assert found == [("get_weather", {"city": "Oslo"})] and turn.text == "Let me check.\n\nOne moment."


def test_an_undeclared_tool_in_tags_is_an_error_naming_the_available_tools():
    _, turn = calls('<tool_call>{"name": "delete_files", "arguments": {"path": "/"}}</tool_call>')
    error = turn.errors[0]
    assert turn.calls == [] and error.kind == "unknown_tool" and error.name == "delete_files"
    assert "get_weather, calculator" in error.for_model() and "delete_files" in error.for_model()


@pytest.mark.parametrize("arguments, problem", [
    ({}, "'city' is a required property"),
    ({"city": 3}, "3 is not of type 'string'"),
    ({"city": "Oslo", "unit": "kelvin"}, "'kelvin' is not one of"),
])
def test_arguments_failing_the_schema_are_an_error_with_the_schema(arguments, problem):
    _, turn = calls("<tool_call>" + json.dumps({"name": "get_weather", "arguments": arguments}) + "</tool_call>")
    error = turn.errors[0]
    assert turn.calls == [] and error.kind == "invalid_arguments" and problem in error.message
    assert error.arguments == arguments and '"required": ["city"]' in error.for_model()


def test_a_tool_with_an_invalid_schema_is_not_validated():
    tools = [{"type": "function", "function": {"name": "odd", "parameters": {"type": "not-a-type"}}}]
    found, turn = calls('<tool_call>{"name": "odd", "arguments": {"x": 1}}</tool_call>', tools)
    assert found == [("odd", {"x": 1})] and turn.errors == []


def test_errors_keep_their_ids_and_calls_keep_theirs_apart():
    text = ('<tool_call>{"name": "calculator", "arguments": {"expression": "1"}}</tool_call>'
            '<tool_call>{"name": "nope", "arguments": {}}</tool_call>')
    turn = parse_assistant(text, TOOLS)
    assert len(turn.calls) == 1 and len(turn.errors) == 1 and turn.calls[0].id != turn.errors[0].id


def test_positional_arguments_beyond_the_parameters_are_an_error():
    _, turn = calls('calculator("1", "2")')
    assert turn.calls == [] and "positional" in turn.errors[0].message


def test_code_inside_python_calls_is_never_run():
    _, turn = calls('calculator(expression=__import__("os").system("echo pwned"))')
    assert turn.calls == [] and turn.errors == []  # not a literal: the reply stays text


TAG_SOUP = st.lists(st.sampled_from(list('<>/{}[]()":,\'\n `=_ abcdefghijklmnopqrstuvwxyz0123456789')
                                    + ["<tool_call>", "</tool_call>", "```", "get_weather", "calculator", '"name"',
                                       '"arguments"', "city=", "True", "None"]), max_size=80).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), TAG_SOUP))
def test_parsing_with_tools_never_raises(text):
    turn = parse_assistant(text, TOOLS)
    assert all(isinstance(c, ToolCall) for c in turn.calls)
    assert all(isinstance(e, ToolCallError) and e.for_model() for e in turn.errors)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=100), TAG_SOUP, st.none(), st.integers()),
       st.one_of(JSON, st.lists(st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries(
           {"name": st.sampled_from(["calculator", "get_weather", ""]), "parameters": JSON})}), max_size=3)))
def test_parsing_never_raises_whatever_the_tools(text, tools):
    turn = parse_assistant(text, tools)
    assert all(isinstance(e, ToolCallError) and e.for_model() for e in turn.errors)


@settings(max_examples=300, deadline=None)
@given(TAG_SOUP, st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=40), st.booleans())
def test_streamed_visible_text_adds_up_to_the_parsed_text(text, steps, with_tools):
    tools = TOOLS if with_tools else None
    visible, released, position = VisibleText(tools), [], 0
    for step in steps * (len(text) // max(sum(steps), 1) + 1):
        if position >= len(text):
            break
        released.append(visible.push(text[position:position + step]))
        position += step
    rest, turn = visible.finish()
    assert "".join(released) + rest == parse_assistant(text, tools).text == turn.text


def test_tool_call_text_is_never_released_while_streaming():
    visible = VisibleText(TOOLS)
    text = 'Checking.\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "2"}}\n</tool_call>'
    released = "".join(visible.push(char) for char in text)
    assert released == "Checking." and "<" not in released
