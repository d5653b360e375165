"""The tool contract: definitions checked when made, run_tool turns every failure into error text.

Tools here are real functions run by the real ``run_tool``; hung tools block on an event
the test releases afterwards, so a ``run_tool`` that waited for them would never return.
"""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.tools import StructuredTool, tool
from pydantic import BaseModel, Field

from datetime import datetime, timezone

from feldspar.agents.builtin_tools import calculator_tool, current_time_tool
from feldspar.agents.errors import AgentError, InvalidToolArguments, ToolDefinitionError
from feldspar.agents.tools import (
    MAX_HUNG_CALLS, FeldsparTool, ToolOutcome, check_unique, feldspar_tool, find_tool, from_langchain, run_named,
    run_tool,
)


class Pair(BaseModel):
    a: int = Field(description="first")
    b: int = Field(0, ge=0, description="second, not negative")


def add(a: int, b: int = 0) -> int:
    return a + b


def adder(**changes) -> FeldsparTool:
    return FeldsparTool(**{"name": "add", "description": "Add two integers.", "args_schema": Pair, "func": add,
                           **changes})


@pytest.fixture
def release():
    """An event hung tools wait on; set when the test ends so their threads finish."""
    event = threading.Event()
    yield event
    event.set()


# ---- definitions ---------------------------------------------------------------------
@pytest.mark.parametrize("changes, words", [
    ({"name": "two words"}, "tool name 'two words' is not valid"),
    ({"name": ""}, "is not valid"),
    ({"name": "1starts_with_digit"}, "is not valid"),
    ({"name": "x" * 65}, "is not valid"),
    ({"name": "dotted.name"}, "is not valid"),
    ({"name": None}, "is not valid"),
    ({"description": ""}, "description is empty"),
    ({"description": "   "}, "description is empty"),
    ({"args_schema": dict}, "args_schema must be a pydantic BaseModel class"),
    ({"args_schema": Pair(a=1)}, "args_schema must be a pydantic BaseModel class"),
    ({"args_schema": {"type": "string"}}, "must describe an object"),
    ({"args_schema": {"type": "object", "properties": {"a": {"type": "no-such-type"}}}}, "invalid JSON schema"),
    ({"func": "not callable"}, "func must be callable"),
    ({"side_effects": "yes"}, "side_effects must be True or False"),
    ({"timeout_s": 0}, "timeout_s must be a positive number"),
    ({"timeout_s": float("inf")}, "timeout_s must be a positive number"),
])
def test_a_bad_definition_raises_a_clear_error_when_made(changes, words):
    with pytest.raises(ToolDefinitionError, match=words) as raised:
        adder(**changes)
    assert isinstance(raised.value, AgentError)


def test_openai_schema_carries_name_description_and_the_argument_schema():
    schema = adder().openai_schema()
    assert schema["type"] == "function"
    function = schema["function"]
    assert (function["name"], function["description"]) == ("add", "Add two integers.")
    assert function["parameters"]["required"] == ["a"]
    assert function["parameters"]["properties"]["b"] == {"default": 0, "minimum": 0, "type": "integer",
                                                          "description": "second, not negative"}


def test_validate_returns_the_function_arguments_and_words_each_problem():
    tool = adder()
    assert tool.validate({"a": "3"}) == {"a": 3, "b": 0}
    with pytest.raises(InvalidToolArguments, match=r"a: Field required"):
        tool.validate({})
    with pytest.raises(InvalidToolArguments, match=r"b: Input should be greater than or equal to 0"):
        tool.validate({"a": 1, "b": -1})
    with pytest.raises(InvalidToolArguments, match=r"unknown argument\(s\) 'c'; expected: a, b"):
        tool.validate({"a": 1, "c": 2})
    with pytest.raises(InvalidToolArguments, match="must be a JSON object, got list"):
        tool.validate([1, 2])


def test_names_must_be_unique_and_unknown_names_are_error_outcomes():
    with pytest.raises(ToolDefinitionError, match="two tools are named 'add'"):
        check_unique([adder(), adder(source="module:x.py")])
    outcome = run_named([adder()], "subtract", {"a": 1})
    assert outcome.error == "unknown tool 'subtract'; available tools: add"
    assert find_tool([adder()], "add").name == "add"


# ---- running -------------------------------------------------------------------------
def test_a_good_call_returns_the_result_as_text_and_value():
    outcome = run_tool(adder(), {"a": 2, "b": 3})
    assert (outcome.result, outcome.value, outcome.error, outcome.timed_out) == ("5", 5, None, False)
    assert outcome.arguments == {"a": 2, "b": 3}
    assert outcome.for_model() == "5"


def test_an_exception_inside_the_tool_becomes_error_text():
    def explode(a: int, b: int = 0) -> int:
        raise RuntimeError(f"disk on fire at {a}")

    outcome = run_tool(adder(func=explode), {"a": 7})
    assert outcome.error == "RuntimeError: disk on fire at 7"
    assert outcome.result is None
    assert outcome.for_model() == "Error: RuntimeError: disk on fire at 7"


def test_system_exit_inside_a_tool_does_not_end_the_caller():
    def leave(a: int, b: int = 0) -> int:
        raise SystemExit(3)

    assert run_tool(adder(func=leave), {"a": 1}).error == "SystemExit: 3"


def test_a_hung_tool_times_out_and_is_abandoned(release):
    def hang(a: int, b: int = 0) -> int:
        release.wait()
        return a

    outcome = run_tool(adder(func=hang, timeout_s=0.05), {"a": 1})
    assert outcome.timed_out
    assert outcome.error == "add did not finish within 0.05 s and was abandoned"


def test_a_tool_with_too_many_hung_calls_is_refused_without_starting_another(release):
    started = []

    def hang(a: int, b: int = 0) -> int:
        started.append(a)
        release.wait()
        return a

    tool = adder(func=hang, timeout_s=0.01)
    for call in range(MAX_HUNG_CALLS):
        assert run_tool(tool, {"a": call}).timed_out
    refused = run_tool(tool, {"a": 99})
    assert not refused.timed_out
    assert f"{MAX_HUNG_CALLS} earlier calls of add are still running" in refused.error
    assert 99 not in started


def test_a_result_that_is_not_json_is_an_error():
    outcome = run_tool(adder(func=lambda a, b=0: object()), {"a": 1})
    assert outcome.error.startswith("add returned a result that is not JSON (object)")
    assert run_tool(adder(func=lambda a, b=0: float("nan")), {"a": 1}).error.startswith("add returned a result")


def test_a_huge_result_is_cut_and_says_so():
    outcome = run_tool(adder(func=lambda a, b=0: "x" * 50), {"a": 1}, max_result_chars=10)
    assert outcome.truncated
    assert outcome.result == "x" * 10 + "\n… [truncated: 40 more characters]"


def test_async_functions_are_awaited():
    async def slow_add(a: int, b: int = 0) -> int:
        await asyncio.sleep(0)
        return a + b

    assert run_tool(adder(func=slow_add), {"a": 4, "b": 4}).value == 8


# ---- langchain ------------------------------------------------------------------------
@tool
def shout(text: str, times: int = 1) -> str:
    """Repeat the text in capitals."""
    return " ".join([text.upper()] * times)


def test_langchain_tools_are_adopted_as_they_are():
    adopted = from_langchain(shout)
    assert (adopted.name, adopted.description, adopted.side_effects) == ("shout", "Repeat the text in capitals.", False)
    assert adopted.openai_schema()["function"]["parameters"]["required"] == ["text"]
    assert run_tool(adopted, {"text": "hi", "times": 2}).result == "HI HI"
    assert "text: Field required" in run_tool(adopted, {"times": 2}).error


def test_side_effects_come_from_the_flag_or_the_tool_metadata():
    flagged = StructuredTool.from_function(func=lambda path: "deleted", name="delete_file",
                                           description="Delete a file.", metadata={"side_effects": True})
    assert from_langchain(flagged).side_effects
    assert from_langchain(shout, side_effects=True).side_effects


def test_async_only_langchain_tools_run():
    async def fetch(url: str) -> str:
        return f"fetched {url}"

    remote = StructuredTool.from_function(coroutine=fetch, name="fetch", description="Fetch a URL.")
    assert run_tool(from_langchain(remote), {"url": "x"}).result == "fetched x"


def test_json_schema_tools_validate_with_the_schema():
    schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 3}}, "required": ["n"]}
    counted = FeldsparTool("count", "Count to n.", schema, lambda n: list(range(n)))
    assert run_tool(counted, {"n": 3}).value == [0, 1, 2]
    assert run_tool(counted, {"n": 4}).error == "invalid arguments for count: n: 4 is greater than the maximum of 3"


def test_as_langchain_runs_through_run_tool_and_returns_errors_as_text():
    converted = adder(func=lambda a, b=0: 1 / 0).as_langchain()
    assert converted.metadata == {"side_effects": False, "source": "python"}
    assert converted.invoke({"a": 1}) == "ZeroDivisionError: division by zero"
    assert adder().as_langchain().invoke({"a": 1, "b": 2}) == "3"
    assert "b: Input should be greater than or equal to 0" in adder().as_langchain().invoke({"a": 1, "b": -2})


def test_the_decorator_builds_the_schema_from_the_signature():
    @feldspar_tool(side_effects=True)
    def send_message(to: str, body: str = "") -> str:
        """Send a message to someone."""
        return f"sent to {to}"

    assert (send_message.name, send_message.description, send_message.side_effects) == (
        "send_message", "Send a message to someone.", True)
    assert run_tool(send_message, {"to": "ada"}).result == "sent to ada"


# ---- current_time ----------------------------------------------------------------------
FIXED = datetime(2026, 3, 1, 12, 30, 5, tzinfo=timezone.utc)


def test_current_time_in_a_named_zone():
    clock = current_time_tool(clock=lambda: FIXED)
    assert run_tool(clock, {"tz": "Europe/Paris"}).value == {
        "time": "2026-03-01T13:30:05+01:00", "timezone": "Europe/Paris", "weekday": "Sunday"}
    assert run_tool(clock, {"tz": "UTC"}).value["time"] == "2026-03-01T12:30:05+00:00"


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../../etc/passwd", "/etc/localtime", "Europe/\x00", "."])
def test_current_time_refuses_unknown_zones_and_paths(zone):
    error = run_tool(current_time_tool(clock=lambda: FIXED), {"tz": zone}).error
    assert error.startswith(f"unknown time zone {zone!r}; use an IANA name")


# ---- fuzzing ---------------------------------------------------------------------------
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
ARGUMENTS = JSON | st.fixed_dictionaries({}, optional={"a": JSON, "b": JSON, "c": JSON})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(["add", "shout", "count", "calculator", "current_time"]) | st.text(max_size=30),
       arguments=ARGUMENTS | st.fixed_dictionaries({}, optional={"expression": JSON, "tz": JSON, "text": JSON}))
def test_fuzzed_tool_calls_never_raise(name, arguments):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    tools = [adder(), from_langchain(shout), FeldsparTool("count", "Count.", schema, lambda a: list(range(a % 5))),
             calculator_tool(), current_time_tool()]
    outcome = run_named(tools, name, arguments)
    assert isinstance(outcome, ToolOutcome)
    assert (outcome.result is None) != (outcome.error is None)
    json.dumps(outcome.to_dict(), default=str)
